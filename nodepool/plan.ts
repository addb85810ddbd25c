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
  /** Nodes that keep their disks but get new images or thresholds (their agent verifies again). */
  update: string[];
  keep: string[];
};

/** The node settings that an update (not a replacement) changes: compare with ExistingNode.settingsKey. */
export function settingsKey(spec: PoolSpec, pinnedImages: string[]): string {
  const { probe, saturation, remediation, liveRestore, insecureRegistries } = spec;
  return JSON.stringify({ images: pinnedImages, probe, saturation, remediation, liveRestore, insecureRegistries });
}

export function nodeNumber(id: string): number {
  return Number(id.slice(1));
}

/** Nodes that are not serving (still starting, unhealthy) go first on scale-down, then the newest. */
function removalOrder(a: ExistingNode, b: ExistingNode): number {
  const serving = (node: ExistingNode) => (node.phase === 'Ready' ? 1 : 0);
  return serving(a) - serving(b) || nodeNumber(b.id) - nodeNumber(a.id);
}

export function planPool(spec: PoolSpec, existing: ExistingNode[] | undefined, pinnedImages: string[]): PoolPlan {
  const nodes = [...(existing ?? [])].filter((node) => node.phase !== 'Removing');
  const key = settingsKey(spec, pinnedImages);
  const disksMatch = (node: ExistingNode) => node.runtimeDiskBytes === spec.disks.runtime.size && node.workloadDiskBytes === (spec.disks.layout === 'single' ? 0 : spec.disks.workload.size);

  const replace = nodes.filter((node) => !disksMatch(node));
  const fitting = nodes.filter(disksMatch);
  // Scale-down takes fitting nodes beyond the count; mismatched ones go in any case.
  const surplus = [...fitting].sort(removalOrder).slice(0, Math.max(0, fitting.length - spec.nodes));
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
    update: staying.filter((node) => node.settingsKey !== key).map((node) => node.id).sort(byNumber),
    keep: staying.filter((node) => node.settingsKey === key).map((node) => node.id).sort(byNumber),
  };
}

export function planIsEmpty(plan: PoolPlan): boolean {
  return !plan.createPool && plan.add.length === 0 && plan.remove.length === 0 && plan.update.length === 0;
}

/** One line per action, as `pool apply --dry-run` prints it. */
export function describePlan(plan: PoolPlan, spec: PoolSpec): string[] {
  const lines: string[] = [];
  const disks = `runtime disk ${spec.disks.runtime.size / 1024 ** 3} GiB, workload disk ${spec.disks.workload.size / 1024 ** 3} GiB`;
  if (plan.createPool) lines.push(`create pool ${plan.pool} (provider ${spec.provider})`);
  for (const id of plan.add) lines.push(`create node ${plan.pool}-${id} (${disks})`);
  for (const id of plan.update) lines.push(`update node ${plan.pool}-${id} (images or thresholds changed)`);
  for (const id of plan.remove) lines.push(`drain and delete node ${plan.pool}-${id}${plan.replace.includes(id) ? ' (disks changed: replaced)' : ''}`);
  if (lines.length === 0) lines.push(`pool ${plan.pool} matches its spec: nothing to do`);
  return lines;
}
