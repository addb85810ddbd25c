import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { startPoolFixture, type PoolFixture } from '../../test/helpers/pools.js';
import { waitFor } from '../../test/helpers/wait.js';
import type { NodeStatus } from '../state/store.js';

// Real loop disks, real dockerds and their agents: needs root, as CI is.
let fixture: PoolFixture;
before(async () => {
  fixture = await startPoolFixture();
});
after(async () => {
  await fixture?.stop();
});

const disks = { runtime: '256M', workload: '256M' };
const fastProbe = { intervalSeconds: 0.5, timeoutSeconds: 1, failureThreshold: 2 };

const status = (pool: string, id = 'n1') => fixture.manager.store.readStatus(pool, id) as Promise<NodeStatus>;
const events = (pool: string, id = 'n1') =>
  readFileSync(fixture.manager.store.paths(pool, id).events, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { event: string; time: string; to?: string; stillRunning?: number });

async function applyPool(name: string, extra: object): Promise<void> {
  const spec = await fixture.writeSpec(name, { name, nodes: 1, disks, images: [fixture.image], probe: fastProbe, ...extra });
  const applied = await fixture.cli(['pool', 'apply', '-f', spec]);
  assert.equal(applied.exitCode, 0, applied.stderr);
}

/** Starts a build that runs `seconds`, then writes /workspace/out; returns the running CLI and the node's workload dir. */
async function startBuild(pool: string, seconds: number) {
  const job = fixture.cli(['--json', 'pool', 'exec', pool, '--', 'sh', '-c', `touch /workspace/started; sleep ${seconds}; echo finished > /workspace/out`]);
  const jobs = join(fixture.manager.store.paths(pool, 'n1').workloadMount, 'jobs');
  await waitFor(`a running build on ${pool}`, 30_000, async () => (await execa('find', [jobs, '-name', 'started'])).stdout.trim() !== '');
  await sleep(500); // the start request has had its answer: the drill hangs a runtime that is idle, as in the field
  // Wrapped: an async function returning the CLI's promise would wait for the build to end.
  return { job };
}

/** SIGSTOPs the node's dockerd, as a runtime wedged on a blocked container operation looks to its clients. */
function hangDockerd(pool: string): number {
  const pid = Number(readFileSync(fixture.manager.store.paths(pool, 'n1').dockerPid, 'utf8').trim());
  process.kill(pid, 'SIGSTOP');
  return Date.now();
}

test('a hung runtime is detected in time; the running build finishes; the node comes back Ready', { timeout: 300_000 }, async (t) => {
  await applyPool('spare', { remediation: { policy: 'drain-then-restart', drainTimeoutSeconds: 120, cooldownSeconds: 600 } });
  const { job } = await startBuild('spare', 6);
  const hungAt = hangDockerd('spare');
  // Two failed probes of at most 1 s each, 0.5 s apart, plus one interval of phase: well under 5 s.
  const unhealthy = await waitFor('Unhealthy', 20_000, async () => (await status('spare')).transitions.find((t) => t.phase === 'Unhealthy' && Date.parse(t.at) >= hungAt));
  const detectedMs = Date.parse(unhealthy.at) - hungAt;
  // The configured budget is 2 x (0.5 s + 1 s); the slack is for a loaded 2-core CI machine.
  const budgetMs = fastProbe.failureThreshold * (fastProbe.intervalSeconds + fastProbe.timeoutSeconds) * 1000;
  assert.ok(detectedMs <= budgetMs + 3000, `detected after ${detectedMs} ms (budget ${budgetMs} ms)`);
  t.diagnostic(`hang detected after ${detectedMs} ms (configured budget ${budgetMs} ms)`);

  const result = await job;
  assert.equal(result.exitCode, 0, result.stderr);
  const { job: jobId, finishedAt } = JSON.parse(result.stdout) as { job: string; finishedAt: string };
  assert.equal(readFileSync(join(fixture.manager.store.paths('spare', 'n1').workloadMount, 'jobs', jobId, 'out'), 'utf8'), 'finished\n');

  const ready = await waitFor('Ready again', 60_000, async () => {
    const s = await status('spare');
    return s.phase === 'Ready' && s.transitions.some((t) => t.phase === 'Ready' && Date.parse(t.at) > hungAt) && s;
  });
  assert.equal(ready.conditions.RuntimeUnhealthy?.status, 'False', 'the problem condition cleared with the restart');
  assert.equal(ready.conditions.RuntimeUnhealthy?.reason, 'RuntimeRestarted');
  const phasesSinceHang = ready.transitions.filter((t) => Date.parse(t.at) >= hungAt).map((t) => t.phase);
  assert.deepEqual(phasesSinceHang, ['Unhealthy', 'Cordoned', 'Draining', 'RuntimeReady', 'Pulling', 'Ready']);
  // The restart came only after the build had finished: nothing was still running when it drained.
  const log = events('spare');
  const drained = log.findIndex((e) => e.event === 'drained');
  const restart = log.findIndex((e) => e.event === 'runtime-restart');
  assert.ok(drained >= 0 && drained < restart);
  assert.equal(log[drained]!.stillRunning, 0);
  assert.ok(Date.parse(log[restart]!.time) >= Date.parse(finishedAt) - 1000, `restart ${log[restart]!.time} came after the build ended ${finishedAt}`);

  // The series /metrics promises, from the same node.
  const metrics = await (await fetch(ready.metricsUrl!)).text();
  for (const series of [
    /buildfleet_runtime_probe_latency_seconds_bucket\{le="0\.005",node="spare-n1"\} \d+/,
    /buildfleet_runtime_probe_failures_total\{node="spare-n1"\} [2-9]\d*/,
    /buildfleet_disk_utilization_ratio\{node="spare-n1",disk="runtime"\} [\d.e-]+/,
    /buildfleet_disk_utilization_ratio\{node="spare-n1",disk="workload"\} [\d.e-]+/,
    /buildfleet_disk_queue_depth\{node="spare-n1",disk="workload"\} [\d.e-]+/,
    /buildfleet_disk_free_bytes\{node="spare-n1",disk="workload"\} \d+/,
    /buildfleet_disk_free_inodes\{node="spare-n1",disk="runtime"\} \d+/,
    /buildfleet_disk_saturated\{node="spare-n1",disk="runtime"\} 0/,
    /buildfleet_node_state\{node="spare-n1",phase="Ready"\} 1/,
    /buildfleet_node_state\{node="spare-n1",phase="Unhealthy"\} 0/,
    /buildfleet_image_pull_duration_seconds_count\{node="spare-n1",image="[^"]+"\} [2-9]/,
    /buildfleet_remediation_actions_total\{node="spare-n1",action="restart"\} 1/,
  ]) {
    assert.match(metrics, series);
  }
  await fixture.manager.delete('spare');
});

test('the field\'s kill-on-first-failure (no live-restore) kills the same build', { timeout: 300_000 }, async () => {
  await applyPool('field', { remediation: { policy: 'kill-on-first-failure', cooldownSeconds: 600 }, liveRestore: false });
  // Longer than dockerd's 10 s stop timeout: a restarted dockerd without live-restore stops what it finds running.
  const { job } = await startBuild('field', 30);
  const hungAt = hangDockerd('field');
  const result = await job;
  assert.equal(result.exitCode, 137, `the build was killed with the runtime: ${result.stderr}`);
  const s = await waitFor('Ready again', 60_000, async () => {
    const current = await status('field');
    return current.phase === 'Ready' && current.transitions.some((t) => t.phase === 'Ready' && Date.parse(t.at) > hungAt) && current;
  });
  const jobs = join(fixture.manager.store.paths('field', 'n1').workloadMount, 'jobs');
  const outputs = (await execa('find', [jobs, '-name', 'out'])).stdout.trim();
  assert.equal(outputs, '', 'the build never wrote its result');
  assert.deepEqual(s.transitions.filter((t) => Date.parse(t.at) >= hungAt).map((t) => t.phase), ['Unhealthy', 'Pulling', 'Ready']);
  await fixture.manager.delete('field');
});

test('I/O load on the workload disk raises its Saturated condition and clears it; the runtime disk stays calm', { timeout: 300_000 }, async () => {
  await applyPool('disks', { saturation: { utilization: 0.5, clearUtilization: 0.2, queueDepth: 64, clearQueueDepth: 32, windowSeconds: 2, sampleSeconds: 0.25 } });
  const workload = fixture.manager.store.paths('disks', 'n1').workloadMount;
  // What a build does to its disk: big direct, synced writes, back to back.
  const load = execa('sh', ['-c', `end=$(($(date +%s)+8)); while [ $(date +%s) -lt $end ]; do dd if=/dev/zero of=${workload}/load bs=1M count=64 oflag=direct conv=fsync 2>/dev/null; done`]);
  try {
    const saturated = await waitFor('WorkloadDiskSaturated', 8000, async () => (await status('disks')).conditions.WorkloadDiskSaturated?.status === 'True' && (await status('disks')));
    assert.notEqual(saturated.conditions.RuntimeDiskSaturated?.status, 'True');
    assert.equal(saturated.conditions.WorkloadDiskSaturated!.reason, 'DiskBusy');
    assert.match(saturated.conditions.WorkloadDiskSaturated!.message, /utilisation \d+%/);
  } finally {
    await load.catch(() => {});
  }
  const calm = await waitFor('WorkloadDiskSaturated to clear', 15_000, async () => {
    const s = await status('disks');
    return s.conditions.WorkloadDiskSaturated?.status === 'False' && s;
  });
  assert.notEqual(calm.conditions.RuntimeDiskSaturated?.status, 'True');
  const log = events('disks').filter((e) => e.event.startsWith('disk-'));
  assert.deepEqual(log.map((e) => [e.event, (e as { disk?: string }).disk]), [['disk-saturated', 'workload'], ['disk-calm', 'workload']]);
  assert.ok(!existsSync(join(workload, 'nothing')));
  await fixture.manager.delete('disks');
});

test("a node is given no job until its large image is pulled (the runtime's own pull)", { timeout: 300_000 }, async () => {
  const large = await fixture.pushImage('ci/large', { dataLayers: 6, layerBytes: 40 * 1024 * 1024, seed: 'large' });
  // The runtime's pull runs while the runtime answers, so the gate is what holds a job back
  // (the direct pre-pull is done before the runtime starts: nodepool/direct-prepull.test.ts).
  const spec = await fixture.writeSpec('gate', { name: 'gate', nodes: 1, disks: { runtime: '1G', workload: '256M' }, images: [large], prepull: { mode: 'pull' } });
  const applied = await fixture.cli(['pool', 'apply', '-f', spec, '--no-wait']);
  assert.equal(applied.exitCode, 0, applied.stderr);
  const askedAt = Date.now();
  const job = await fixture.cli(['--json', 'pool', 'exec', 'gate', '--', 'sh', '-c', 'ls /data | wc -l']);
  assert.equal(job.exitCode, 0, job.stderr);
  const result = JSON.parse(job.stdout) as { startedAt: string; waitedMs: number };
  const s = await status('gate');
  const pulling = s.transitions.find((t) => t.phase === 'Pulling')!;
  const ready = s.transitions.find((t) => t.phase === 'Ready')!;
  assert.ok(Date.parse(ready.at) - Date.parse(pulling.at) > 500, 'the pull took a while');
  assert.ok(Date.parse(result.startedAt) >= Date.parse(ready.at), `job started ${result.startedAt}, node Ready ${ready.at}`);
  assert.ok(askedAt < Date.parse(ready.at), 'the job was asked for before the node was Ready');
  assert.match(job.stderr, /^6$/m, 'the job saw every layer of the image');
  await fixture.manager.delete('gate');
});
