import type { NodeCondition } from '../state/store.js';
import type { KubeTaint } from './cluster-nodes.js';

/**
 * Pure: the `pool status` table of a GKE pool, a row per node, from what the provider reports
 * (`describeNode` details, the conditions as `readStatus` passes them on). Kubernetes' view first
 * (Ready, cordoned, taints: the startup taint shows until the agent removes it), then buildfleet's
 * problem conditions (True while the problem exists, as node-problem-detector's) with their
 * reason, then any other condition reporting a problem (kubelet's MemoryPressure, NPD's...).
 */

/** What the table reads of a node (a structural slice of the manager's NodeView). */
export type GkeNodeStatus = {
  name: string;
  phase: string;
  conditions: Partial<Record<string, NodeCondition>>;
  /** The GKE provider's describeNode details: ready, unschedulable, taints (KubeTaint[]). */
  details: Record<string, unknown>;
};

type Details = { ready?: boolean; unschedulable?: boolean; taints?: KubeTaint[] };

export const BUILDFLEET_CONDITIONS = ['RuntimeUnhealthy', 'RuntimeDiskSaturated', 'WorkloadDiskSaturated'] as const;
export const GKE_STATUS_HEADER = ['NODE', 'PHASE', 'K8S READY', 'SCHEDULING', 'TAINTS', 'RUNTIME', 'RUNTIME DISK', 'WORKLOAD DISK', 'OTHER PROBLEMS'];

export function taintText(taint: KubeTaint): string {
  return `${taint.key}${taint.value === undefined || taint.value === '' ? '' : `=${taint.value}`}:${taint.effect}`;
}

/** `True`, or `False (KubeletNotReady)`, or `Unknown`. */
function readyText(node: GkeNodeStatus): string {
  const ready = node.conditions.Ready;
  if (!ready) return (node.details as Details).ready ? 'True' : 'Unknown';
  return ready.status === 'True' ? 'True' : `${ready.status}${ready.reason ? ` (${ready.reason})` : ''}`;
}

/** `-` while the agent has not reported it, `ok`, or `Unhealthy (RuntimeHung)` / `Saturated (DiskBusy)`. */
function problemText(condition: NodeCondition | undefined, word: string): string {
  if (!condition) return '-';
  if (condition.status === 'False') return 'ok';
  return `${condition.status === 'True' ? word : 'Unknown'}${condition.reason ? ` (${condition.reason})` : ''}`;
}

export function gkeNodeRow(node: GkeNodeStatus): string[] {
  const details = node.details as Details;
  const taints = details.taints ?? [];
  const known = new Set<string>(['Ready', ...BUILDFLEET_CONDITIONS]);
  const others = Object.entries(node.conditions)
    .filter(([type, condition]) => !known.has(type) && condition?.status === 'True')
    .map(([type, condition]) => `${type}${condition?.reason ? ` (${condition.reason})` : ''}`);
  return [
    node.name,
    node.phase,
    readyText(node),
    details.unschedulable ? 'cordoned' : 'schedulable',
    taints.length ? taints.map(taintText).join(', ') : '-',
    problemText(node.conditions.RuntimeUnhealthy, 'Unhealthy'),
    problemText(node.conditions.RuntimeDiskSaturated, 'Saturated'),
    problemText(node.conditions.WorkloadDiskSaturated, 'Saturated'),
    others.join(', ') || '-',
  ];
}

export function gkeStatusRows(nodes: GkeNodeStatus[]): string[][] {
  return [GKE_STATUS_HEADER, ...nodes.map(gkeNodeRow)];
}
