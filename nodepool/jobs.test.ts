import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pickNode } from './jobs.js';
import type { NodeView } from './pool.js';

const node = (id: string, over: Partial<NodeView> = {}): NodeView => ({
  name: `ci-${id}`,
  id,
  phase: 'Ready',
  cordoned: false,
  agentAlive: true,
  conditions: {},
  phaseTimes: {},
  transitions: [],
  images: [],
  runningJobs: 0,
  disks: { runtime: { sizeBytes: 1 }, workload: { sizeBytes: 1, mountPoint: '/w' } },
  details: {},
  ...over,
});

test('jobs go only to Ready, uncordoned nodes with a live agent, the least busy first', () => {
  assert.equal(pickNode([node('n1', { phase: 'Pulling' }), node('n2', { phase: 'Draining' }), node('n3', { phase: 'Unhealthy' })]), undefined);
  assert.equal(pickNode([node('n1', { cordoned: true }), node('n2', { agentAlive: false })]), undefined);
  assert.equal(pickNode([node('n1', { runningJobs: 2 }), node('n2', { runningJobs: 1 }), node('n3', { runningJobs: 1 })])?.id, 'n2');
  assert.equal(pickNode([node('n10'), node('n9', { phase: 'RuntimeReady' }), node('n2')])?.id, 'n2');
});
