import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import type { StateStore } from '../state/store.js';
import { wireRequests, type WireRequest } from './dry-run.js';
import { checkGkeSpec, type GkeProvider } from './provider.js';
import {
  changedUpdatableSettings,
  createNodePoolRequest,
  gkePoolName,
  nodePoolAutoscaling,
  requireGke,
  setNodePoolAutoscalingRequest,
  setNodePoolSizeRequest,
  updateNodePoolRequest,
  type MutatingRequest,
  type UpdatableSetting,
} from './requests.js';
import { describeRotation, planRotation, rotationRequests, type RotationPlan } from './rotation.js';

/**
 * `pool apply / create / resize / delete` for a GKE pool. The manager's plan is node by node
 * (disks per node, images pinned per node); a GKE pool converges per node pool: create it,
 * rotate it (what GKE fixes at creation changed), or update it in place (labels, taints,
 * kubelet config, image streaming, autoscaling) and resize it. The images are the pre-pull
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
  /** Settings changed on the existing node pool, and the requests that do it (sent before a resize). */
  inPlace?: { settings: InPlaceSetting[]; requests: MutatingRequest[] };
  resize?: { from: number; to: number };
  /** Every mutating request, in the order sent (a shrink: one setNodePoolSize per drained node). */
  requests: MutatingRequest[];
};

/** What an existing node pool changes in place: updateNodePool's settings, and autoscaling (setNodePoolAutoscaling). */
export type InPlaceSetting = UpdatableSetting | 'autoscaling';

/**
 * Pure: the in-place changes from one spec of a node pool to the next: one updateNodePool
 * carrying every changed node setting, then setNodePoolAutoscaling when the bounds changed
 * (before any resize, so a new count may lie within new bounds). undefined: nothing to update.
 */
export function planInPlace(current: PoolSpec, wanted: PoolSpec, nodePool: string): GkePlan['inPlace'] {
  const gke = requireGke(wanted);
  const changed = changedUpdatableSettings(current, wanted);
  const requests = changed.length > 0 ? [updateNodePoolRequest(wanted, nodePool, changed)] : [];
  const settings: InPlaceSetting[] = [...changed];
  if (JSON.stringify(nodePoolAutoscaling(requireGke(current))) !== JSON.stringify(nodePoolAutoscaling(gke))) {
    settings.push('autoscaling');
    requests.push(setNodePoolAutoscalingRequest(gke, nodePool));
  }
  return requests.length > 0 ? { settings, requests } : undefined;
}

/** Pure: from the recorded spec (undefined: no pool yet) to the wanted one. */
export function planGkeApply(current: PoolSpec | undefined, wanted: PoolSpec): GkePlan {
  const gke = requireGke(wanted);
  const base = { pool: wanted.name, nodePool: gkePoolName(wanted), createPool: false };
  if (!current) return { ...base, createPool: true, requests: [createNodePoolRequest(wanted)] };
  // Something fixed at creation changed: the new node pool is made with every wanted setting.
  const rotation = planRotation(current, wanted);
  if (rotation) return { ...base, rotation, requests: rotationRequests(rotation) };
  const inPlace = planInPlace(current, wanted, base.nodePool);
  const updates = { ...(inPlace && { inPlace }), requests: inPlace?.requests ?? [] };
  const from = current.nodes;
  const to = wanted.nodes;
  if (from === to) return { ...base, ...updates };
  const sizes = to > from ? [to] : Array.from({ length: from - to }, (_, index) => from - index - 1);
  return { ...base, ...updates, resize: { from, to }, requests: [...updates.requests, ...sizes.map((size) => setNodePoolSizeRequest(gke, base.nodePool, size))] };
}

function describeInPlace(plan: GkePlan, spec: PoolSpec): string[] {
  if (!plan.inPlace) return [];
  const gke = requireGke(spec);
  const lines: string[] = [];
  const nodeSettings = plan.inPlace.settings.filter((setting) => setting !== 'autoscaling');
  if (nodeSettings.length > 0) {
    // GKE applies labels and taints to the running nodes without re-creating them (its documented
    // dynamic update); node system settings it may roll out by re-creating nodes: said, so no one is surprised.
    const recreates = nodeSettings.filter((setting) => setting === 'kubeletConfig' || setting === 'gcfsConfig');
    lines.push(`update node pool ${plan.nodePool} in place (updateNodePool): ${nodeSettings.join(', ')}${recreates.length > 0 ? `; GKE may re-create the nodes for ${recreates.join(' and ')} (its node upgrade strategy)` : ''}`);
  }
  if (plan.inPlace.settings.includes('autoscaling')) {
    lines.push(gke.autoscaling ? `set autoscaling of node pool ${plan.nodePool} to ${gke.autoscaling.min}-${gke.autoscaling.max} nodes (setNodePoolAutoscaling)` : `turn autoscaling of node pool ${plan.nodePool} off (setNodePoolAutoscaling)`);
  }
  return lines;
}

export function describeGkePlan(plan: GkePlan, spec: PoolSpec): string[] {
  const lines: string[] = [];
  if (plan.createPool) lines.push(`create GKE node pool ${plan.nodePool} with ${spec.nodes} node(s) (${requireGke(spec).machineType}) in cluster ${requireGke(spec).cluster}`);
  if (plan.rotation) lines.push(...describeRotation(plan.rotation));
  lines.push(...describeInPlace(plan, spec));
  if (plan.resize && plan.resize.to > plan.resize.from) lines.push(`resize node pool ${plan.nodePool} from ${plan.resize.from} to ${plan.resize.to} node(s)`);
  if (plan.resize && plan.resize.to < plan.resize.from) lines.push(`cordon and drain ${plan.resize.from - plan.resize.to} node(s) of ${plan.nodePool}, one at a time, each followed by a resize one smaller (to ${plan.resize.to})`);
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
  } else {
    if (plan.inPlace) await provider.updateInPlace(spec, plan.inPlace.requests);
    if (plan.resize && plan.resize.to > plan.resize.from) {
      await provider.createNode(spec, `n${plan.resize.to}`, []);
    } else if (plan.resize) {
      // The newest first; each drained, then the node pool one smaller.
      for (let id = plan.resize.from; id > plan.resize.to; id--) await provider.deleteNode(spec.name, `n${id}`);
    }
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
