import type { FakeKubeApi } from '../kube-api/server.js';
import { RESOURCES, type KubeObject } from '../kube-api/store.js';
import type { FakeGke, OperationEffect } from './server.js';

/**
 * Joins a fake GKE to a fake Kubernetes API, as a real cluster joins GKE to its control plane:
 * when a node pool's create or resize is DONE, its VMs register as Node objects (label
 * `cloud.google.com/gke-nodepool`, the pool's labels and taints from the create request, Ready,
 * no images yet); a shrink removes nodes (cordoned ones first, then the newest), a delete all of
 * the pool's. Optionally it plays the agent too: the startup taint goes `untaintAfterMs` after a
 * node registers.
 *
 * It watches the store and, after every node change, counts each buildfleet pool's serving nodes
 * (Ready, schedulable, no startup taint): `samples` is that log, so a test can assert that no
 * moment had fewer than asked.
 */

export const GKE_POOL_LABEL = 'cloud.google.com/gke-nodepool';
export const BUILDFLEET_POOL_LABEL = 'buildfleet.io/pool';
const STARTUP_TAINT_PREFIX = 'startup-taint.cluster-autoscaler.kubernetes.io/';
const NODES = RESOURCES.find((type) => type.plural === 'nodes')!;
/** container.v1 NodeTaint.Effect, as numbers (enum-encoding=int) or names, to Kubernetes' names. */
const TAINT_EFFECT: Record<string, string> = { 1: 'NoSchedule', 2: 'PreferNoSchedule', 3: 'NoExecute', NO_SCHEDULE: 'NoSchedule', PREFER_NO_SCHEDULE: 'PreferNoSchedule', NO_EXECUTE: 'NoExecute' };

type WireTaint = { key: string; value?: string; effect: number | string };
type WireConfig = { labels?: Record<string, string>; taints?: WireTaint[] };
export type ServingSample = { at: number; pool: string; serving: number; nodes: number };

export class ClusterLink {
  readonly samples: ServingSample[] = [];
  /** Plays the agent: removes the startup taint this long after a node registers (undefined: never). */
  untaintAfterMs: number | undefined;
  private counter = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly gke: FakeGke,
    private readonly kube: FakeKubeApi,
    options: { untaintAfterMs?: number } = {},
  ) {
    this.untaintAfterMs = options.untaintAfterMs;
    gke.onDone = (effect) => this.apply(effect);
    this.unsubscribe = kube.store.subscribe((event) => {
      if (event.resource === 'nodes') this.sample();
    });
  }

  nodes(gkePool?: string): KubeObject[] {
    return this.kube.store.list(NODES).filter((node) => gkePool === undefined || node.metadata.labels?.[GKE_POOL_LABEL] === gkePool);
  }

  /** Ready, schedulable and without a startup taint: a node that may take builds. */
  static serving(node: KubeObject): boolean {
    const spec = (node.spec ?? {}) as { unschedulable?: boolean; taints?: WireTaint[] };
    const status = (node.status ?? {}) as { conditions?: { type: string; status: string }[] };
    const ready = status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    return ready && spec.unschedulable !== true && !(spec.taints ?? []).some((taint) => taint.key.startsWith(STARTUP_TAINT_PREFIX));
  }

  /** The fewest serving nodes of a buildfleet pool seen at or after `since` (ms since the epoch). */
  lowestServing(pool: string, since = 0): number {
    return Math.min(...this.samples.filter((s) => s.pool === pool && s.at >= since).map((s) => s.serving));
  }

  /** Plays the agent for every node now tainted: the startup taint goes. */
  untaintAll(): void {
    for (const node of this.nodes()) this.untaint(node.metadata.name);
  }

  close(): void {
    this.unsubscribe();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  private sample(): void {
    const byPool = new Map<string, KubeObject[]>();
    for (const node of this.nodes()) {
      const pool = node.metadata.labels?.[BUILDFLEET_POOL_LABEL];
      if (pool) byPool.set(pool, [...(byPool.get(pool) ?? []), node]);
    }
    const seen = new Set(this.samples.map((s) => s.pool));
    for (const pool of new Set([...seen, ...byPool.keys()])) {
      const nodes = byPool.get(pool) ?? [];
      this.samples.push({ at: Date.now(), pool, serving: nodes.filter(ClusterLink.serving).length, nodes: nodes.length });
    }
  }

  private apply(effect: OperationEffect): void {
    const pool = effect.nodePool;
    if (effect.type === 'DELETE_NODE_POOL') {
      for (const node of this.nodes(pool)) this.kube.store.delete(NODES, undefined, node.metadata.name);
      return;
    }
    if (effect.type === 'UPDATE_NODE_POOL') return this.relabel(pool, (effect.previous ?? {}) as WireConfig, (this.gke.pools.get(pool)?.config ?? {}) as WireConfig);
    if (effect.type === 'SET_NODE_POOL_AUTOSCALING') return;
    const config = (this.gke.pools.get(pool)?.config ?? {}) as WireConfig;
    const want = effect.nodeCount ?? 0;
    for (let have = this.nodes(pool).length; have < want; have++) this.register(pool, config);
    // GKE's instance group picks which VMs go; a drained scale-down wants the cordoned ones.
    const cordonedFirst = (a: KubeObject, b: KubeObject) => Number(isCordoned(b)) - Number(isCordoned(a)) || b.metadata.name.localeCompare(a.metadata.name);
    const surplus = this.nodes(pool).sort(cordonedFirst).slice(0, Math.max(0, this.nodes(pool).length - want));
    for (const node of surplus) this.kube.store.delete(NODES, undefined, node.metadata.name);
  }

  /**
   * An in-place update reaches the running nodes as GKE applies it: the labels and taints the
   * pool's config gave them are replaced by the new ones; anything else on a node (the agent
   * having removed the startup taint, a cordon, kubelet's own labels) stays.
   */
  private relabel(pool: string, before: WireConfig, after: WireConfig): void {
    const taintId = (taint: { key: string; effect: number | string }) => `${taint.key}:${TAINT_EFFECT[String(taint.effect)] ?? String(taint.effect)}`;
    for (const node of this.nodes(pool)) {
      const labels = { ...node.metadata.labels };
      for (const key of Object.keys(before.labels ?? {})) delete labels[key];
      Object.assign(labels, after.labels, { [GKE_POOL_LABEL]: pool });
      const spec = (node.spec ?? {}) as { taints?: WireTaint[] };
      // Only what the update changed: a taint in both sets that the agent already removed stays removed.
      const beforeIds = new Set((before.taints ?? []).map(taintId));
      const afterIds = new Set((after.taints ?? []).map(taintId));
      const kept = (spec.taints ?? []).filter((taint) => afterIds.has(taintId(taint)) || !beforeIds.has(taintId(taint)));
      const added = (after.taints ?? []).filter((taint) => !beforeIds.has(taintId(taint)) && !kept.some((t) => taintId(t) === taintId(taint))).map(kubeTaint);
      const taints = [...kept, ...added];
      this.kube.store.replace(NODES, undefined, node.metadata.name, { ...node, metadata: { ...node.metadata, labels }, spec: { ...spec, taints } });
    }
  }

  private register(pool: string, config: WireConfig): void {
    const name = `gke-${this.gke.options.cluster}-${pool}-${String(++this.counter).padStart(4, '0')}`;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    this.kube.store.create(NODES, undefined, {
      metadata: { name, labels: { ...config.labels, [GKE_POOL_LABEL]: pool, 'kubernetes.io/hostname': name } },
      spec: {
        providerID: `gce://${this.gke.options.project}/${this.gke.options.location}/${name}`,
        taints: (config.taints ?? []).map(kubeTaint),
      },
      status: {
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastHeartbeatTime: now, lastTransitionTime: now }],
        images: [],
      },
    });
    if (this.untaintAfterMs !== undefined) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.untaint(name);
      }, this.untaintAfterMs);
      this.timers.add(timer);
    }
  }

  private untaint(name: string): void {
    let node: KubeObject;
    try {
      node = this.kube.store.get(NODES, undefined, name);
    } catch {
      return; // gone already
    }
    const spec = (node.spec ?? {}) as { taints?: WireTaint[] };
    const taints = (spec.taints ?? []).filter((taint) => !taint.key.startsWith(STARTUP_TAINT_PREFIX));
    if (taints.length === (spec.taints ?? []).length) return;
    this.kube.store.replace(NODES, undefined, name, { ...node, spec: { ...spec, taints } });
  }
}

/** A container.v1 NodeTaint as Kubernetes writes it on the Node. */
function kubeTaint(taint: WireTaint): WireTaint {
  return { key: taint.key, ...(taint.value !== undefined && { value: taint.value }), effect: TAINT_EFFECT[String(taint.effect)] ?? String(taint.effect) };
}

function isCordoned(node: KubeObject): boolean {
  return (node.spec as { unschedulable?: boolean } | undefined)?.unschedulable === true;
}
