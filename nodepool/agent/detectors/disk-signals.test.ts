import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskWindow, SaturationCondition, parseDiskstats } from './disk-signals.js';

test('diskstats: io_ticks and weighted time are fields 13 and 14, by device name', () => {
  const text = [
    '   7       0 loop0 10 0 80 5 20 0 160 30 0 1234 5678 0 0 0 0 0 0',
    ' 254       0 vda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17',
    'short line',
  ].join('\n');
  const stats = parseDiskstats(text);
  assert.deepEqual(stats.get('loop0'), { readsCompleted: 10, sectorsRead: 80, writesCompleted: 20, sectorsWritten: 160, ioTicksMs: 1234, weightedMs: 5678 });
  assert.equal(stats.get('vda')?.ioTicksMs, 10);
  assert.equal(stats.size, 2);
});

const sample = (atMs: number, ioTicksMs: number, weightedMs: number) => ({ atMs, ioTicksMs, weightedMs, readsCompleted: 0, writesCompleted: 0, sectorsRead: 0, sectorsWritten: 0 });

test("budget share: a disk writing at its budget uses all of it, though its utilisation (the throttle hides the queue) stays low", () => {
  const window = new DiskWindow(1000);
  const budget = { readBytesPerSecond: 0, writeBytesPerSecond: 40 * 1024 ** 2, iops: 100 };
  window.add({ ...sample(0, 0, 0) });
  // 20 MiB written in 500 ms as 40 writes of 512 KiB, busy 50 ms of it.
  window.add({ ...sample(500, 50, 60), sectorsWritten: (20 * 1024 ** 2) / 512, writesCompleted: 40 });
  assert.equal(window.utilization, 0.1);
  assert.equal(window.budgetShare(budget), 1);
  assert.equal(window.budgetShare({ ...budget, writeBytesPerSecond: 80 * 1024 ** 2 }), 0.8); // 80 writes/s of 100 iops
  assert.equal(window.budgetShare({ readBytesPerSecond: 0, writeBytesPerSecond: 0, iops: 0 }), 0);
});

test('utilisation and queue depth are deltas over the window, and old samples leave it', () => {
  const window = new DiskWindow(1000);
  assert.equal(window.utilization, undefined);
  window.add(sample(0, 0, 0));
  window.add(sample(500, 500, 2000)); // busy the whole time, 4 in flight
  assert.equal(window.utilization, 1);
  assert.equal(window.queueDepth, 4);
  window.add(sample(1000, 500, 2000));
  window.add(sample(2000, 500, 2000)); // idle for the last full window
  assert.equal(window.utilization, 0);
  assert.equal(window.queueDepth, 0);
});

const thresholds = { utilization: 0.9, queueDepth: 8, clearUtilization: 0.6, clearQueueDepth: 4, minFreeRatio: 0.05 };
const reading = (utilization: number, queueDepth = 0, free = 0.5) => ({ utilization, queueDepth, freeBytesRatio: free, freeInodesRatio: 0.5 });

test('Saturated sets at the threshold and clears only below the lower one (hysteresis)', () => {
  const condition = new SaturationCondition(thresholds);
  assert.equal(condition.update(reading(0.85)), false);
  assert.equal(condition.update(reading(0.95)), true);
  assert.equal(condition.saturated, true);
  assert.equal(condition.reason, 'DiskBusy');
  assert.match(condition.message, /utilisation 95%/);
  assert.equal(condition.update(reading(0.7)), false, 'between the thresholds it stays set');
  assert.equal(condition.update(reading(0.5, 5)), false, 'queue depth still above its clear threshold');
  assert.equal(condition.update(reading(0.5, 1)), true);
  assert.equal(condition.saturated, false);
  assert.equal(condition.reason, 'DiskCalm');
  assert.match(condition.message, /utilisation 50%, queue depth 5\.0/, 'the message still names the last saturated reading');
  assert.equal(condition.update(reading(0.1, 9)), true, 'queue depth alone saturates');
});

test('low space or inodes saturate a quiet disk', () => {
  const condition = new SaturationCondition(thresholds);
  assert.equal(condition.update(reading(0, 0, 0.01)), true);
  assert.equal(condition.reason, 'DiskLowOnSpace');
  assert.match(condition.message, /free space 1\.0%/);
  assert.equal(condition.update(reading(0, 0, 0.5)), true);
  assert.equal(condition.saturated, false);
});
