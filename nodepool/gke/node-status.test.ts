import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatPoolStatus } from '../../cli/pool.js';
import type { PoolView } from '../pool.js';
import type { NodeCondition } from '../state/store.js';
import { gkeNodeRow, gkeStatusRows, GKE_STATUS_HEADER, type GkeNodeStatus } from './node-status.js';

// Pure: the `pool status` row of a GKE node: Kubernetes' view, then buildfleet's problem conditions.

const taint = { key: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull', value: 'true', effect: 'NoSchedule' };
const c = (status: NodeCondition['status'], reason: string): NodeCondition => ({ status, reason, message: `${reason} message`, lastTransitionTime: '2026-12-06T02:00:00Z' });
const node = (name: string, phase: string, details: GkeNodeStatus['details'], conditions: GkeNodeStatus['conditions']): GkeNodeStatus => ({ name, phase, details, conditions });
const cells = (row: string[]) => Object.fromEntries(GKE_STATUS_HEADER.map((column, index) => [column, row[index]]));

test('a registered node still pulling: Ready, schedulable, the startup taint shown, no agent report yet', () => {
  const row = gkeNodeRow(node('gke-a', 'Pulling', { ready: true, unschedulable: false, taints: [taint] }, { Ready: c('True', 'KubeletReady') }));
  assert.deepEqual(cells(row), {
    NODE: 'gke-a',
    PHASE: 'Pulling',
    'K8S READY': 'True',
    SCHEDULING: 'schedulable',
    TAINTS: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull=true:NoSchedule',
    RUNTIME: '-',
    'RUNTIME DISK': '-',
    'WORKLOAD DISK': '-',
    'OTHER PROBLEMS': '-',
  });
});

test('a cordoned node with a hung runtime and a saturated workload disk: each with its reason; other problem conditions listed', () => {
  const row = gkeNodeRow(
    node('gke-b', 'Cordoned', { ready: true, unschedulable: true, taints: [{ key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }] }, {
      Ready: c('True', 'KubeletReady'),
      RuntimeUnhealthy: c('True', 'RuntimeHung'),
      RuntimeDiskSaturated: c('False', 'DiskCalm'),
      WorkloadDiskSaturated: c('True', 'DiskBusy'),
      MemoryPressure: c('True', 'KubeletHasInsufficientMemory'),
      DiskPressure: c('False', 'KubeletHasNoDiskPressure'),
    }),
  );
  assert.deepEqual(cells(row), {
    NODE: 'gke-b',
    PHASE: 'Cordoned',
    'K8S READY': 'True',
    SCHEDULING: 'cordoned',
    TAINTS: 'node.kubernetes.io/unschedulable:NoSchedule',
    RUNTIME: 'Unhealthy (RuntimeHung)',
    'RUNTIME DISK': 'ok',
    'WORKLOAD DISK': 'Saturated (DiskBusy)',
    'OTHER PROBLEMS': 'MemoryPressure (KubeletHasInsufficientMemory)',
  });
});

test('a node the kubelet reports not Ready shows why; Unknown conditions stay Unknown', () => {
  const row = gkeNodeRow(node('gke-c', 'Provisioning', { ready: false, unschedulable: false, taints: [] }, { Ready: c('False', 'KubeletNotReady'), RuntimeUnhealthy: c('Unknown', 'NoReport') }));
  assert.deepEqual([row[2], row[4], row[5]], ['False (KubeletNotReady)', '-', 'Unknown (NoReport)']);
});

test('pool status of a GKE pool prints these columns, and the Ready count', () => {
  const nodes = [node('gke-a', 'Ready', { ready: true, unschedulable: false, taints: [] }, { Ready: c('True', 'KubeletReady') }), node('gke-b', 'Pulling', { ready: true, taints: [taint] }, {})];
  const view = { name: 'ci', provider: 'gke', desiredNodes: 2, images: ['reg/ci/build:1'], nodes } as unknown as PoolView;
  const lines = formatPoolStatus(view).trimEnd().split('\n');
  assert.equal(lines[0], 'pool ci (gke): 1/2 nodes Ready; images: reg/ci/build:1');
  assert.deepEqual(lines[1]!.split(/\s{2,}/), GKE_STATUS_HEADER);
  assert.deepEqual(lines.slice(2).map((line) => line.split(/\s{2,}/)), gkeStatusRows(nodes).slice(1));
});
