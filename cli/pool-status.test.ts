import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeView, PoolView } from '../nodepool/pool.js';
import type { NodeCondition } from '../nodepool/state/store.js';
import { formatPoolStatus } from './pool.js';

// The PROBE and disk columns of `pool status` from the problem conditions (True while the problem exists).

const at = '2026-12-05T18:00:00.000Z';
const condition = (status: NodeCondition['status'], reason: string, message: string): NodeCondition => ({ status, reason, message, lastTransitionTime: at });

/** Only what the table reads; the rest of a NodeView is the provider's. */
function node(name: string, conditions: NodeView['conditions']): NodeView {
  return { name, id: name.slice(-2), phase: 'Ready', cordoned: false, agentAlive: true, conditions, phaseTimes: {}, runningJobs: 0 } as unknown as NodeView;
}

test('pool status: PROBE healthy / failing: MESSAGE / -, disks ok / Saturated', () => {
  const view = {
    name: 'ci',
    provider: 'local',
    desiredNodes: 3,
    images: [],
    nodes: [
      node('ci-n1', { RuntimeUnhealthy: condition('False', 'ProbeAnswered', 'probe answered') }),
      node('ci-n2', {
        RuntimeUnhealthy: condition('True', 'RuntimeHung', 'no answer within 1000 ms'),
        WorkloadDiskSaturated: condition('True', 'DiskBusy', 'utilisation 97%, queue depth 3.0'),
        RuntimeDiskSaturated: condition('False', 'DiskCalm', 'utilisation 1%, queue depth 0.0: below the clear thresholds'),
      }),
      node('ci-n3', {}),
    ],
  } as PoolView;
  const rows = formatPoolStatus(view).trim().split('\n').slice(1).map((line) => line.trim().split(/\s{2,}/));
  const columns = rows[0]!;
  const cells = (row: string[]) => Object.fromEntries(['RUNTIME DISK', 'WORKLOAD DISK', 'PROBE'].map((name) => [name, row[columns.indexOf(name)]]));
  assert.deepEqual(cells(rows[1]!), { 'RUNTIME DISK': 'ok', 'WORKLOAD DISK': 'ok', PROBE: 'healthy' });
  assert.deepEqual(cells(rows[2]!), { 'RUNTIME DISK': 'ok', 'WORKLOAD DISK': 'Saturated', PROBE: 'failing: no answer within 1000 ms' });
  assert.deepEqual(cells(rows[3]!), { 'RUNTIME DISK': 'ok', 'WORKLOAD DISK': 'ok', PROBE: '-' });
});
