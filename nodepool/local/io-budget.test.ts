import { test } from 'node:test';
import assert from 'node:assert/strict';
import { containerBlkioLimits, containerParts, partsOf, shareOf } from './io-budget.js';

const budget = { device: '7:3', path: '/dev/loop3', readBytesPerSecond: 100, writeBytesPerSecond: 40, iops: 0 };

test('a part of a budget: each limit divided, none removed (0 would mean no limit), no limit stays none', () => {
  assert.deepEqual(shareOf(budget, 4), { ...budget, readBytesPerSecond: 25, writeBytesPerSecond: 10, iops: 0 });
  assert.deepEqual(shareOf(budget, 1000), { ...budget, readBytesPerSecond: 1, writeBytesPerSecond: 1, iops: 0 });
  assert.deepEqual(shareOf(budget, 0), budget);
});

test('active containers share the budget equally; an idle one gets what it would get by starting now', () => {
  // Three writing, one idle: the three use all of it, the idle one is held to a fourth at once.
  assert.equal(partsOf(true, 3), 3);
  assert.equal(partsOf(false, 3), 4);
  // Nobody writing: whoever starts first may use the whole budget.
  assert.equal(partsOf(false, 0), 1);
  // At most one part over the budget until the next look: 3 x 1/3 + 1/4.
  assert.ok(3 / partsOf(true, 3) + 1 / partsOf(false, 3) <= 1 + 1 / 3);
});

test('a job container gets its parts as the Docker API names device limits', () => {
  assert.deepEqual(containerBlkioLimits([budget]), {
    BlkioDeviceReadBps: [{ Path: '/dev/loop3', Rate: 100 }],
    BlkioDeviceWriteBps: [{ Path: '/dev/loop3', Rate: 40 }],
    BlkioDeviceReadIOps: [],
    BlkioDeviceWriteIOps: [],
  });
});

test('parts are cut disk by disk: a container busy on the runtime disk takes nothing from the workload disk\'s writers', () => {
  const runtime = { ...budget, device: '7:0', path: '/dev/loop0' };
  const workload = { ...budget, device: '7:1', path: '/dev/loop1' };
  const parts = containerParts(
    [runtime, workload],
    new Map([
      ['writer-a', new Set(['7:1'])],
      ['writer-b', new Set(['7:1'])],
      ['docker-run', new Set(['7:0'])],
    ]),
  );
  const write = (dir: string) => parts.get(dir)!.map((part) => part.writeBytesPerSecond);
  assert.deepEqual(write('writer-a'), [20, 20]); // runtime: a newcomer's part beside the one active there; workload: half
  assert.deepEqual(write('writer-b'), [20, 20]);
  assert.deepEqual(write('docker-run'), [40, 13]); // the runtime disk's only user; a third of the workload disk should it start there
});
