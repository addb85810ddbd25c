import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import type { JobRun, NodeDescription, NodeStatusSource, Provider, Released } from '../provider.js';
import type { NodeCondition, NodeStatus, PinnedImage, StateStore } from '../state/store.js';
import type { ClusterNodes, KubeNodeView } from './cluster-nodes.js';
import { clusterManagerTransport, type GkeConnection, type GkeTransport } from './client.js';
import { GkeOperations, type GkeOperationsOptions } from './operations.js';
import { createNodePoolRequest, deleteNodePoolRequest, gkePoolName, requireGke, setNodePoolSizeRequest, type MutatingRequest } from './requests.js';
import { planRotation, rotate, serving, waitServing, type RotationPlan } from './rotation.js';

/**
 * The GKE provider. The seam (`provider.ts`) is per node; GKE is per node pool. A buildfleet
 * pool is one GKE node pool (named by `gkePoolName`), and the manager's node ids n1..nK are
 * that pool's Kubernetes nodes in name order. Creating node nK raises the pool to K nodes
 * (createNodePool the first time, setNodePoolSize after), deleting a node drains it and lowers
 * the size by one; which VM GKE then removes is GKE's choice (its instance group), so scale-down
 * drains first. Node-level facts (Ready, taints, cordon, drain) come from Kubernetes through
 * `ClusterNodes`, which `kube/` implements. See README.md.
 */

const ZERO: Released = { processes: 0, mounts: 0, loopDevices: 0 };
/** Machine families without local SSDs: a spec asking them for a workload device is refused before any call. */
const NO_LOCAL_SSD = /^(e2|t2d|t2a|n4|c4a?|n1-(micro|small))(-|$)/;

/** What GKE would refuse, known from the spec alone (no call, no credentials): one line each. */
export function checkGkeSpec(spec: PoolSpec, nodes: number): void {
  const gke = requireGke(spec);
  if (NO_LOCAL_SSD.test(gke.machineType)) {
    throw new BuildfleetError('unsupported', `gke.machineType: ${gke.machineType} has no local SSDs, but builds need one (gke.workloadDevice); pick e.g. n2-standard-8 or c3-standard-8-lssd`);
  }
  if (gke.autoscaling && nodes > gke.autoscaling.max) throw new BuildfleetError('usage', `gke.autoscaling.max ${gke.autoscaling.max} is below the ${nodes} new nodes asked`);
}

export type GkeProviderOptions = {
  connection?: GkeConnection;
  operations?: GkeOperationsOptions;
  /** The Kubernetes side for the spec's cluster; without it node-level calls refuse with one line. */
  clusterNodes?: (spec: PoolSpec) => ClusterNodes | Promise<ClusterNodes>;
  /** How long a new node may take to register with Kubernetes, and how often to look. */
  registerTimeoutMs?: number;
  pollMs?: number;
  log?: (line: string) => void;
};

export class GkeProvider implements Provider {
  readonly status: NodeStatusSource;
  private transport?: Promise<GkeTransport>;
  private readonly operationsByCluster = new Map<string, GkeOperations>();
  /** Sizes this process asked for, per GKE node pool: the API reports no current size. */
  private readonly sizes = new Map<string, number>();
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(
    private readonly store: StateStore,
    private readonly options: GkeProviderOptions = {},
  ) {
    this.status = { read: (pool, id) => this.readStatus(pool, id) };
  }

  /** No root: what may be changed is up to the credentials (Application Default Credentials), checked by GKE on the first call. */
  requireAccess(_command: 'apply' | 'delete'): void {}

  async checkNewNodes(spec: PoolSpec, ids: string[]): Promise<void> {
    // Without Kubernetes no new node can be seen to register: refuse before making anything.
    await this.nodesFor(spec);
    checkGkeSpec(spec, ids.length);
  }

  async operationsFor(spec: PoolSpec): Promise<GkeOperations> {
    const gke = requireGke(spec);
    const key = `${gke.project}/${gke.location}`;
    let operations = this.operationsByCluster.get(key);
    if (!operations) {
      this.transport ??= clusterManagerTransport(this.options.connection);
      operations = new GkeOperations(await this.transport, gke, { ...this.options.operations, log: this.options.log });
      this.operationsByCluster.set(key, operations);
    }
    return operations;
  }

  private async nodesFor(spec: PoolSpec): Promise<ClusterNodes> {
    if (!this.options.clusterNodes) throw new BuildfleetError('unsupported', `pool ${spec.name}: node-level calls on GKE need the Kubernetes integration (kube/), which is not wired in here`);
    return this.options.clusterNodes(spec);
  }

  /** One change at a time per pool: sizes are read and written under it. */
  private locked<T>(pool: string, work: () => Promise<T>): Promise<T> {
    const next = (this.locks.get(pool) ?? Promise.resolve()).catch(() => {}).then(work);
    this.locks.set(pool, next);
    return next;
  }

  private async specOf(pool: string): Promise<PoolSpec> {
    const spec = (await this.store.requirePool(pool)).spec;
    requireGke(spec);
    return spec;
  }

  private async poolNodes(spec: PoolSpec): Promise<KubeNodeView[]> {
    const views = await (await this.nodesFor(spec)).listPoolNodes(gkePoolName(spec));
    return [...views].sort((a, b) => a.name.localeCompare(b.name));
  }

  private async nodeOf(pool: string, id: string): Promise<{ spec: PoolSpec; node: KubeNodeView }> {
    const spec = await this.specOf(pool);
    const node = (await this.poolNodes(spec))[Number(id.slice(1)) - 1];
    if (!node) throw new BuildfleetError('not-found', `pool ${pool} has no node ${id} (GKE node pool ${gkePoolName(spec)})`);
    return { spec, node };
  }

  /**
   * Node nK: the pool has at least K nodes, and at least the spec's count (so the nodes of one
   * apply cost one operation: a create, or one resize), and K have registered.
   */
  async createNode(spec: PoolSpec, id: string, _images: PinnedImage[]): Promise<void> {
    const wanted = Math.max(Number(id.slice(1)), spec.nodes);
    const name = gkePoolName(spec);
    const gke = requireGke(spec);
    await this.locked(name, async () => {
      const operations = await this.operationsFor(spec);
      const known = this.sizes.get(name) ?? ((await operations.getNodePool(gke, name)) ? (await this.poolNodes(spec)).length : undefined);
      if (known === undefined) await this.createPool(spec, operations, wanted);
      else if (known < wanted) await operations.run(setNodePoolSizeRequest(gke, name, wanted));
      this.sizes.set(name, Math.max(known ?? 0, wanted));
    });
    await this.waitRegistered(spec, Number(id.slice(1)));
  }

  /** Nothing half-made: a create that fails takes its node pool away again, or says what is left. */
  private async createPool(spec: PoolSpec, operations: GkeOperations, nodes: number): Promise<void> {
    const gke = requireGke(spec);
    const name = gkePoolName(spec);
    try {
      await operations.run(createNodePoolRequest(spec, { nodeCount: nodes }));
    } catch (err) {
      if (!(err instanceof BuildfleetError) || !(await operations.getNodePool(gke, name).catch(() => undefined))) throw err;
      const cleanup = await operations.run(deleteNodePoolRequest(gke, name)).then(
        () => `the half-made node pool ${name} was deleted`,
        (cleanupErr: Error) => `node pool ${name} is left half-made (${cleanupErr.message}): delete it with "gcloud container node-pools delete ${name} --cluster ${gke.cluster} --location ${gke.location} --project ${gke.project}"`,
      );
      throw new BuildfleetError(err.kind, `${err.message}; ${cleanup}`);
    }
  }

  private async waitRegistered(spec: PoolSpec, count: number): Promise<void> {
    const deadline = Date.now() + (this.options.registerTimeoutMs ?? 15 * 60_000);
    while ((await this.poolNodes(spec)).length < count) {
      if (Date.now() > deadline) throw new BuildfleetError('environment', `GKE node pool ${gkePoolName(spec)}: fewer than ${count} nodes registered with Kubernetes in time`);
      await sleep(this.options.pollMs ?? 5_000);
    }
  }

  /** Settings the node pool changes in place (updateNodePool, setNodePoolAutoscaling: apply.ts plans them), one operation each, in order. */
  async updateInPlace(spec: PoolSpec, requests: MutatingRequest[]): Promise<void> {
    await this.locked(gkePoolName(spec), async () => {
      const operations = await this.operationsFor(spec);
      for (const request of requests) await operations.run(request);
    });
  }

  /** Images come from the pre-pull DaemonSet (kube/), settings from the node pool: nothing per node. */
  async updateNode(): Promise<boolean> {
    return false;
  }

  async listNodes(pool: string): Promise<string[]> {
    const spec = await this.specOf(pool);
    return (await this.poolNodes(spec)).map((_, index) => `n${index + 1}`);
  }

  async describeNode(pool: string, id: string): Promise<NodeDescription> {
    const { spec, node } = await this.nodeOf(pool, id);
    return {
      id,
      name: node.name,
      disks: { runtime: { sizeBytes: spec.disks.runtime.size }, workload: { sizeBytes: spec.disks.workload.size, mountPoint: '' } },
      cordoned: node.unschedulable,
      agentAlive: node.ready,
      runningJobs: 0,
      details: { gkeNodePool: gkePoolName(spec), ready: node.ready, unschedulable: node.unschedulable, taints: node.taints, conditions: node.conditions },
    };
  }

  async cordon(pool: string, id: string, reason: string): Promise<void> {
    const { spec, node } = await this.nodeOf(pool, id);
    await (await this.nodesFor(spec)).cordon(node.name, reason);
  }

  /** Drains the node, then the pool is one node smaller. */
  async deleteNode(pool: string, id: string): Promise<Released> {
    const { spec, node } = await this.nodeOf(pool, id);
    const nodes = await this.nodesFor(spec);
    const name = gkePoolName(spec);
    await nodes.cordon(node.name, 'scale-down');
    await nodes.drain(node.name, { deadlineSeconds: spec.remediation.drainTimeoutSeconds });
    await nodes.deleteNode?.(node.name);
    await this.locked(name, async () => {
      const size = Math.max(0, (this.sizes.get(name) ?? (await this.poolNodes(spec)).length + (nodes.deleteNode ? 1 : 0)) - 1);
      await (await this.operationsFor(spec)).run(setNodePoolSizeRequest(requireGke(spec), name, size));
      this.sizes.set(name, size);
    });
    return ZERO;
  }

  /** Until `count` nodes of the spec's node pool are Ready, schedulable and untainted. */
  async waitServing(spec: PoolSpec, count: number, timeoutMs: number): Promise<void> {
    await waitServing(await this.nodesFor(spec), gkePoolName(spec), count, requireGke(spec).startupTaint.key, timeoutMs, this.options.pollMs ?? 5_000);
  }

  /** Cordons every node of the pool, then drains them one by one (Eviction API): before the node pools go. */
  async drainPool(pool: string, reason: string): Promise<number> {
    const spec = await this.specOf(pool);
    const nodes = await this.nodesFor(spec);
    const views = await this.poolNodes(spec);
    for (const node of views) await nodes.cordon(node.name, reason);
    for (const node of views) await nodes.drain(node.name, { deadlineSeconds: spec.remediation.drainTimeoutSeconds });
    return views.length;
  }

  /** Deletes the pool's GKE node pools: its own and any a crashed rotation left (`NAME-xxxxxx`). */
  async cleanupPool(pool: string): Promise<Released> {
    const spec = await this.specOf(pool);
    const gke = requireGke(spec);
    const operations = await this.operationsFor(spec);
    const mine = new RegExp(`^${spec.name}-[0-9a-f]{6}$`);
    for (const nodePool of await operations.listNodePools(gke)) {
      if (nodePool.name && mine.test(nodePool.name)) await operations.run(deleteNodePoolRequest(gke, nodePool.name));
    }
    this.sizes.delete(gkePoolName(spec));
    return ZERO;
  }

  async runJob(pool: string): Promise<JobRun> {
    throw new BuildfleetError('unsupported', `pool ${pool}: on GKE builds run as Kubernetes pods (schedule them on the pool's nodes), not through pool exec`);
  }

  /** A new node pool for what the old one cannot change, then the old one goes; undefined when nothing fixed changed. */
  async rotate(current: PoolSpec, wanted: PoolSpec, options: { readyTimeoutMs?: number; pollMs?: number } = {}): Promise<RotationPlan | undefined> {
    const plan = planRotation(current, wanted);
    if (!plan) return undefined;
    await rotate(plan, {
      operations: await this.operationsFor(wanted),
      nodes: await this.nodesFor(wanted),
      startupTaintKey: requireGke(wanted).startupTaint.key,
      drainDeadlineSeconds: current.remediation.drainTimeoutSeconds,
      readyTimeoutMs: options.readyTimeoutMs,
      pollMs: options.pollMs ?? this.options.pollMs,
      log: this.options.log,
    });
    this.sizes.set(plan.newPool, plan.nodes);
    this.sizes.delete(plan.oldPool);
    return plan;
  }

  private async readStatus(pool: string, id: string): Promise<NodeStatus | undefined> {
    const found = await this.nodeOf(pool, id).catch(() => undefined);
    if (!found) return undefined;
    const { spec, node } = found;
    const phase = !node.ready ? 'Provisioning' : node.unschedulable ? 'Cordoned' : serving(node, requireGke(spec).startupTaint.key) ? 'Ready' : 'Pulling';
    const conditions: Record<string, NodeCondition> = {};
    for (const c of node.conditions) {
      if (c.status === 'True' || c.status === 'False' || c.status === 'Unknown') conditions[c.type] = { status: c.status, reason: c.reason ?? '', message: c.message ?? '', lastTransitionTime: c.lastTransitionTime ?? '' };
    }
    return { phase, transitions: [], conditions, images: [], updatedAt: new Date().toISOString() };
  }

  async close(): Promise<void> {
    if (this.transport) await (await this.transport).close();
  }
}
