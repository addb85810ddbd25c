import { test } from 'node:test';
import assert from 'node:assert/strict';
import { containerBlkioLimits, shareOf } from './io-budget.js';

const budget = { device: '7:3', path: '/dev/loop3', readBytesPerSecond: 100, writeBytesPerSecond: 40, iops: 0 };

test('a part of a budget: each limit divided, none removed (0 would mean no limit), no limit stays none', () => {
  assert.deepEqual(shareOf(budget, 4), { ...budget, readBytesPerSecond: 25, writeBytesPerSecond: 10, iops: 0 });
  assert.deepEqual(shareOf(budget, 1000), { ...budget, readBytesPerSecond: 1, writeBytesPerSecond: 1, iops: 0 });
  assert.deepEqual(shareOf(budget, 0), budget);
});

test('a job container gets its parts as the Docker API names device limits', () => {
  assert.deepEqual(containerBlkioLimits([budget]), {
    BlkioDeviceReadBps: [{ Path: '/dev/loop3', Rate: 100 }],
    BlkioDeviceWriteBps: [{ Path: '/dev/loop3', Rate: 40 }],
    BlkioDeviceReadIOps: [],
    BlkioDeviceWriteIOps: [],
  });
});
