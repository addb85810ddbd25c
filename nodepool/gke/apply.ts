import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import type { StateStore } from '../state/store.js';
import { wireRequests, type WireRequest } from './dry-run.js';
import { checkGkeSpec, type GkeProvider } from './provider.js';
import { createNodePoolRequest, gkePoolName, nodeConfig, requireGke, setNodePoolSizeRequest, type MutatingRequest } from './requests.js';
import { describeRotation, planRotation, rotationRequests, type RotationPlan } from './rotation.js';

/**
 * `pool apply / create / resize / delete` for a GKE pool. The manager's plan is node by node
 * (disks per node, images pinned per node); a GKE pool converges per node pool: create it,
 * rotate it (what GKE fixes at creation changed), or resize it. The images are the pre-pull
 * DaemonSet's business (`kube manifests`), so nothing here asks a registry. The plan is pure and
 * its requests are exactly what is sent, so `--dry-run` prints them (dry-run.ts) with no
 * credentials and no socket.
 */

export type GkePlan = {
  pool: string;
  /** The GKE node pool the spec names. */
  nodePool: string;
  createPool: boolean;
  rotation?: RotationPlan;
  resize?: { from: number; to: number };
  /** Settings an existing node pool keeps (updateNodePool is not used): named, not silently dropped. */
  notApplied: string[];
  /** Every mutating request, in the order sent (a shrink: one setNodePoolSize per drained node). */
  requests: MutatingRequest[];
};

/** Pure: from the recorded spec (undefined: no pool yet) to the wanted one. */
export function planGkeApply(current: PoolSpec | undefined, wanted: PoolSpec): GkePlan {
  const gke = requireGke(wanted);
  const base = { pool: wanted.name, nodePool: gkePoolName(wanted), createPool: false, notApplied: [] as string[] };
  if (!current) return { ...base, createPool: true, requests: [createNodePoolRequest(wanted)] };
  const rotation = planRotation(current, wanted);
  if (rotation) return { ...base, rotation, requests: rotationRequests(rotation) };
  const before = nodeConfig(current);
  const after = nodeConfig(wanted);
  const notApplied: string[] = (['labels', 'taints', 'kubeletConfig', 'gcfsConfig'] as const).filter((field) => JSON.stringify(before[field]) !== JSON.stringify(after[field]));
  if (JSON.stringify(current.gke?.autoscaling) !== JSON.stringify(gke.autoscaling)) notApplied.push('autoscaling');
  const from = current.nodes;
  const to = wanted.nodes;
  if (from === to) return { ...base, notApplied, requests: [] };
  const sizes = to > from ? [to] : Array.from({ length: from - to }, (_, index) => from - index - 1);
  return { ...base, notApplied, resize: { from, to }, requests: sizes.map((size) => setNodePoolSizeRequest(gke, base.nodePool, size)) };
}

export function describeGkePlan(plan: GkePlan, spec: PoolSpec): string[] {
  const lines: string[] = [];
  if (plan.createPool) lines.push(`create GKE node pool ${plan.nodePool} with ${spec.nodes} node(s) (${requireGke(spec).machineType}) in cluster ${requireGke(spec).cluster}`);
  if (plan.rotation) lines.push(...describeRotation(plan.rotation));
  if (plan.resize && plan.resize.to > plan.resize.from) lines.push(`resize node pool ${plan.nodePool} from ${plan.resize.from} to ${plan.resize.to} node(s)`);
  if (plan.resize && plan.resize.to < plan.resize.from) lines.push(`cordon and drain ${plan.resize.from - plan.resize.to} node(s) of ${plan.nodePool}, one at a time, each followed by a resize one smaller (to ${plan.resize.to})`);
  if (plan.notApplied.length) lines.push(`not applied to the existing node pool (updateNodePool is not used): ${plan.notApplied.join(', ')}; change something fixed at creation to rotate, or delete and re-create`);
  if (lines.length === 0) lines.push(`pool ${plan.pool} matches its spec: nothing to do`);
  return lines;
}

export type GkeApplyOptions = { dryRun?: boolean; mustBeNew?: boolean; wait?: boolean; timeoutMs?: number };
export type GkeApplyResult = { plan: GkePlan; lines: string[]; requests?: WireRequest[] };

export async function applyGkePool(store: StateStore, provider: GkeProvider, spec: PoolSpec, options: GkeApplyOptions = {}): Promise<GkeApplyResult> {
  const record = await store.readPool(spec.name);
  if (record && options.mustBeNew) throw new BuildfleetError('conflict', `pool ${spec.name} already exists in ${store.root} (see "buildfleet pool status ${spec.name}")`);
  if (record && record.spec.provider !== 'gke') throw new BuildfleetError('usage', `pool ${spec.name} is a ${record.spec.provider} pool; delete it before making it a gke pool`);
  const plan = planGkeApply(record?.spec, spec);
  const lines = describeGkePlan(plan, spec);
  checkGkeSpec(spec, spec.nodes);
  if (options.dryRun) return { plan, lines, requests: await wireRequests(plan.requests) };
  await provider.checkNewNodes(spec, []);
  const now = new Date().toISOString();
  const timeoutMs = options.timeoutMs ?? 30 * 60_000;
  if (plan.createPool) {
    await store.claimPool({ spec, createdAt: now, updatedAt: now });
    try {
      if (spec.nodes > 0) await provider.createNode(spec, `n${spec.nodes}`, []);
    } catch (err) {
      // The provider has deleted the half-made node pool (or its message says what is left).
      await store.removePoolDir(spec.name).catch(() => {});
      throw err;
    }
  } else if (plan.rotation) {
    await provider.rotate(record!.spec, spec, { readyTimeoutMs: timeoutMs });
  } else if (plan.resize && plan.resize.to > plan.resize.from) {
    await provider.createNode(spec, `n${plan.resize.to}`, []);
  } else if (plan.resize) {
    // The newest first; each drained, then the node pool one smaller.
    for (let id = plan.resize.from; id > plan.resize.to; id--) await provider.deleteNode(spec.name, `n${id}`);
  }
  if (!plan.createPool) await store.writePool({ ...record!, spec, updatedAt: now });
  if (options.wait !== false && spec.nodes > 0) await provider.waitServing(spec, spec.nodes, timeoutMs);
  return { plan, lines };
}

/** Drains every node (no build is killed), then deletes the pool's node pools and its record. */
export async function deleteGkePool(store: StateStore, provider: GkeProvider, pool: string): Promise<{ nodes: number; processes: 0; mounts: 0; loopDevices: 0 }> {
  const nodes = await provider.drainPool(pool, 'pool delete');
  await provider.cleanupPool(pool);
  await store.removePoolDir(pool);
  return { nodes, processes: 0, mounts: 0, loopDevices: 0 };
}
