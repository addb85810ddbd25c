import type { PoolSpec } from './pool-spec/pool-spec.js';
import type { NodePhase } from './state/lifecycle.js';

/**
 * What `pool apply` will do to converge a pool on its spec, pure so that `--dry-run` prints
 * exactly what a real apply then does.
 */

export type ExistingNode = {
  id: string;
  phase: NodePhase | undefined;
  runtimeDiskBytes: number;
  /** 0 for a single-disk node (disks.layout single): its work dirs live on the runtime disk. */
  workloadDiskBytes: number;
  /** The pinned images and settings the node was given, as one comparable string. */
  settingsKey: string;
  /** The pinned images (repo@digest) the node was given; undefined for a half-made node. */
  images?: string[];
};

export type PoolPlan = {
  pool: string;
  createPool: boolean;
  /** New node ids, in creation order. */
  add: string[];
  /** Nodes to drain and delete (scale-down, or replaced). */
  remove: string[];
  /** Nodes whose disks no longer match the spec: a new node is added for each, then the old one removed. */
  replace: string[];
  /**
   * Nodes on other images: rolled surge first (`roll-plan.ts`), a new node Ready before an old
   * one is cordoned, drained and deleted, so running builds finish on the old image.
   */
  roll: string[];
  /** Nodes that keep their disks and images but get new thresholds (their agent takes them at its next probe). */
  update: string[];
  keep: string[];
};

/** The node settings that an update (not a replacement) changes: compare with ExistingNode.settingsKey. */
export function settingsKey(spec: PoolSpec, pinnedImages: string[]): string {
  const { probe, saturation, remediation, liveRestore, insecureRegistries, cache } = spec;
  // `cache` only when set: nodes of pools without one keep the key they had.
  return JSON.stringify({ images: pinnedImages, probe, saturation, remediation, liveRestore, insecureRegistries, ...(cache && { cache }) });
}

export function nodeNumber(id: string): number {
  return Number(id.slice(1));
}

/** Whether a node holds exactly these pinned images (a half-made node, without a record, does not). */
export function hasImages(node: Pick<ExistingNode, 'images'>, pinnedImages: string[]): boolean {
  return node.images !== undefined && JSON.stringify(node.images) === JSON.stringify(pinnedImages);
}

/**
 * On scale-down, nodes that are not serving (still starting, unhealthy) go first, then nodes on
 * other images (they would be rolled anyway), then the newest.
 */
function removalOrder(pinnedImages: string[]) {
  const serving = (node: ExistingNode) => (node.phase === 'Ready' ? 1 : 0);
  const current = (node: ExistingNode) => (hasImages(node, pinnedImages) ? 1 : 0);
  return (a: ExistingNode, b: ExistingNode) => serving(a) - serving(b) || current(a) - current(b) || nodeNumber(b.id) - nodeNumber(a.id);
}

export function planPool(spec: PoolSpec, existing: ExistingNode[] | undefined, pinnedImages: string[]): PoolPlan {
  const nodes = [...(existing ?? [])].filter((node) => node.phase !== 'Removing');
  const key = settingsKey(spec, pinnedImages);
  const disksMatch = (node: ExistingNode) => node.runtimeDiskBytes === spec.disks.runtime.size && node.workloadDiskBytes === (spec.disks.layout === 'single' ? 0 : spec.disks.workload.size);

  const replace = nodes.filter((node) => !disksMatch(node));
  const fitting = nodes.filter(disksMatch);
  // Scale-down takes fitting nodes beyond the count; mismatched ones go in any case.
  const surplus = [...fitting].sort(removalOrder(pinnedImages)).slice(0, Math.max(0, fitting.length - spec.nodes));
  const staying = fitting.filter((node) => !surplus.includes(node));
  const toAdd = Math.max(0, spec.nodes - staying.length);
  let next = Math.max(0, ...(existing ?? []).map((node) => nodeNumber(node.id))) + 1;
  const add = Array.from({ length: toAdd }, () => `n${next++}`);
  const byNumber = (a: string, b: string) => nodeNumber(a) - nodeNumber(b);
  return {
    pool: spec.name,
    createPool: existing === undefined,
    add,
    remove: [...surplus, ...replace].map((node) => node.id).sort(byNumber),
    replace: replace.map((node) => node.id).sort(byNumber),
    roll: staying.filter((node) => !hasImages(node, pinnedImages)).map((node) => node.id).sort(byNumber),
    update: staying.filter((node) => hasImages(node, pinnedImages) && node.settingsKey !== key).map((node) => node.id).sort(byNumber),
    keep: staying.filter((node) => node.settingsKey === key).map((node) => node.id).sort(byNumber),
  };
}

export function planIsEmpty(plan: PoolPlan): boolean {
  return !plan.createPool && plan.add.length === 0 && plan.remove.length === 0 && plan.roll.length === 0 && plan.update.length === 0;
}

/** One line per action, as `pool apply --dry-run` prints it. */
export function describePlan(plan: PoolPlan, spec: PoolSpec): string[] {
  const lines: string[] = [];
  const disks = `runtime disk ${spec.disks.runtime.size / 1024 ** 3} GiB, workload disk ${spec.disks.workload.size / 1024 ** 3} GiB`;
  if (plan.createPool) lines.push(`create pool ${plan.pool} (provider ${spec.provider})`);
  for (const id of plan.add) lines.push(`create node ${plan.pool}-${id} (${disks})`);
  for (const id of plan.update) lines.push(`update node ${plan.pool}-${id} (thresholds changed)`);
  for (const id of plan.roll) lines.push(`roll node ${plan.pool}-${id} to the new images (a new node Ready first, then this one drained and deleted)`);
  for (const id of plan.remove) lines.push(`drain and delete node ${plan.pool}-${id}${plan.replace.includes(id) ? ' (disks changed: replaced)' : ''}`);
  if (lines.length === 0) lines.push(`pool ${plan.pool} matches its spec: nothing to do`);
  return lines;
}
