import assert from 'node:assert/strict';
import { test } from 'node:test';
import { availableParallelism } from 'node:os';
import { busyCpuSeconds, hostBusyCpuSeconds, waitForQuietHost } from './stats.js';

test("busy CPU seconds from /proc/stat: user, nice, system, irq, softirq; not idle, iowait or steal", () => {
  const stat = ['cpu  1000 20 300 50000 700 4 6 900 0 0', 'cpu0 500 10 150 25000 350 2 3 450 0 0', 'intr 12345'].join('\n');
  assert.equal(busyCpuSeconds(stat), (1000 + 20 + 300 + 4 + 6) / 100);
  assert.equal(busyCpuSeconds('nothing like it'), undefined);
  assert.equal(busyCpuSeconds('cpu  1 2 x 4 5 6 7'), undefined);
});

test('the host counts up: a busy loop of 200 ms shows in it', async () => {
  const before = await hostBusyCpuSeconds();
  assert.ok(before !== undefined && before > 0, 'Linux has /proc/stat');
  const end = performance.now() + 200;
  while (performance.now() < end);
  const spent = (await hostBusyCpuSeconds())! - before;
  assert.ok(spent >= 0.15, `${spent} s busy over a 200 ms busy loop`);
});

test('waiting for a quiet host: one quiet second is enough, and a host that stays busy is waited for no longer than the timeout', async () => {
  const cores = availableParallelism();
  // No host is busier than all its cores: quiet after the first second.
  const quick = await waitForQuietHost(cores, { busyShare: 1.01, timeoutMs: 10_000 });
  assert.ok(quick >= 0.9 && quick < 2.5, `${quick} s`);
  // Nor is any host quiet below zero: the timeout ends the wait.
  const capped = await waitForQuietHost(cores, { busyShare: -1, timeoutMs: 2_500 });
  assert.ok(capped >= 2.5 && capped < 4.5, `${capped} s`);
});
