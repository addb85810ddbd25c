import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { startPoolFixture, type PoolFixture } from '../../test/helpers/pools.js';
import type { NodeStatus } from '../state/store.js';
import { nodeDaemonsCgroupName } from './cgroups.js';

// A disk's I/O budget binds every writer of the node: its build containers (what `pool exec`
// runs) and its own daemons. Real loop disks, dockerd and agent: root.
const POOL = 'budget';
const MiB = 1024 ** 2;
const BUDGET = 40 * MiB;
/** Slack for timing (the rate is measured in the job over whole centiseconds) and the throttle's burst allowance. */
const TOLERANCE = 1.3;
let fixture: PoolFixture;

before(async () => {
  fixture = await startPoolFixture();
  const budget = { writeBytesPerSecond: BUDGET, readBytesPerSecond: BUDGET };
  const spec = await fixture.writeSpec(POOL, {
    name: POOL,
    nodes: 1,
    disks: { runtime: { size: '512M', ...budget }, workload: { size: '768M', ...budget } },
    images: [fixture.image],
    // The product's utilisation threshold (0.9): a disk held at its budget shows a budget share of
    // about 1.0 and is raised, while the runtime disk's few writes (a container's start) stay
    // under it even when the other test files keep the host's own disk busy. At 0.5 they did not:
    // one CI run saw the runtime disk 78% busy for 2 s on a handful of small fsyncs.
    saturation: { utilization: 0.9, clearUtilization: 0.2, queueDepth: 64, clearQueueDepth: 32, windowSeconds: 2, sampleSeconds: 0.25 },
  });
  const applied = await fixture.cli(['pool', 'apply', '-f', spec]);
  assert.equal(applied.exitCode, 0, applied.stderr);
});
after(async () => {
  await fixture?.stop();
});

/** A job's shell snippet that writes `mib` MiB to a file with dd and prints `elapsed SECONDS` (from /proc/uptime: busybox dd prints no rate). */
const timedWrite = (file: string, mib: number, flags: string) =>
  `read a _ < /proc/uptime; dd if=/dev/zero of=${file} bs=1M count=${mib} ${flags} 2>/dev/null || exit 9; read b _ < /proc/uptime; echo "elapsed $a $b"`;

function elapsedSeconds(stdout: string): { start: number; end: number; seconds: number } {
  const match = /elapsed ([\d.]+) ([\d.]+)/.exec(stdout);
  assert.ok(match, `the job printed its timing: ${stdout}`);
  const start = Number(match[1]);
  const end = Number(match[2]);
  return { start, end, seconds: end - start };
}

/** Records every Saturated condition the agent raises while `during` runs. */
async function watchSaturation<T>(during: Promise<T>): Promise<{ result: T; raised: Set<string>; why: Map<string, string> }> {
  const raised = new Set<string>();
  // What the agent measured when it raised each one: a failure then says which signal (utilisation, queue, space) and how much.
  const why = new Map<string, string>();
  let done = false;
  const watcher = (async () => {
    while (!done) {
      const status = (await fixture.manager.store.readStatus(POOL, 'n1')) as NodeStatus | undefined;
      for (const [type, condition] of Object.entries(status?.conditions ?? {})) if (type.endsWith('DiskSaturated') && condition?.status === 'True') {
        raised.add(type);
        if (!why.has(type)) why.set(type, `${condition.reason}: ${condition.message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  try {
    return { result: await during, raised, why };
  } finally {
    done = true;
    await watcher;
  }
}

test('a build job writing to /workspace through pool exec is held to the workload disk budget', { timeout: 300_000 }, async (t) => {
  const mib = 200;
  const { result: job, raised, why } = await watchSaturation(fixture.cli(['--quiet', 'pool', 'exec', POOL, '--', 'sh', '-c', timedWrite('/workspace/big', mib, 'conv=fsync')]));
  assert.equal(job.exitCode, 0, job.stderr.slice(-500));
  const rate = (mib * MiB) / elapsedSeconds(job.stdout).seconds;
  t.diagnostic(`job wrote ${mib} MiB at ${(rate / MiB).toFixed(1)} MiB/s (budget ${BUDGET / MiB}); conditions raised: ${[...raised].join(', ') || 'none'}`);
  assert.ok(rate <= BUDGET * TOLERANCE, `the job wrote at ${(rate / MiB).toFixed(1)} MiB/s, over its disk's budget of ${BUDGET / MiB} MiB/s`);
  // Slower than the budget by far would mean the test measured something else (another writer, a stall).
  assert.ok(rate >= BUDGET / 4, `the job wrote at only ${(rate / MiB).toFixed(1)} MiB/s`);
  assert.ok(!raised.has('RuntimeDiskSaturated'), `the runtime disk stayed calm (the agent raised ${why.get('RuntimeDiskSaturated')})`);
  // Held at its budget, the disk's device is mostly idle (the throttle holds the queue): the agent sees the budget in use.
  assert.ok(raised.has('WorkloadDiskSaturated'), 'the agent saw the workload disk at its budget');
});

test('three build jobs at once share one budget: together they write no faster than the disk allows', { timeout: 300_000 }, async (t) => {
  const mib = 100;
  const jobs = await Promise.all(
    ['a', 'b', 'c'].map((name) => fixture.cli(['--quiet', 'pool', 'exec', POOL, '--', 'sh', '-c', timedWrite(`/workspace/${name}`, mib, 'conv=fsync')])),
  );
  for (const job of jobs) assert.equal(job.exitCode, 0, job.stderr.slice(-500));
  const spans = jobs.map((job) => elapsedSeconds(job.stdout));
  // Every clock is the host's uptime: the span from the first start to the last end covers all bytes.
  const seconds = Math.max(...spans.map((s) => s.end)) - Math.min(...spans.map((s) => s.start));
  const rate = (3 * mib * MiB) / seconds;
  t.diagnostic(`three jobs wrote ${3 * mib} MiB in ${seconds.toFixed(2)} s: ${(rate / MiB).toFixed(1)} MiB/s together (budget ${BUDGET / MiB})`);
  assert.ok(rate <= BUDGET * TOLERANCE, `together ${(rate / MiB).toFixed(1)} MiB/s, over the budget of ${BUDGET / MiB} MiB/s`);
});

test("the node's daemons (containerd, dockerd and what they start) are held to each disk's budget", { timeout: 300_000 }, async (t) => {
  const paths = fixture.manager.store.paths(POOL, 'n1');
  // A writer in the daemons' cgroup, as dockerd is when it writes a layer or a log to the runtime disk.
  const mib = 120;
  // Direct I/O: buffered writes may also be written back by the kernel's flusher (root's budget) when the host has many dirty pages.
  const writer = execa('sh', ['-c', `read go; ${timedWrite(`${paths.runtimeMount}/daemon-write`, mib, 'oflag=direct')}`], { stdin: 'pipe' });
  const cgroupProcs = `/sys/fs/cgroup/blkio/${nodeDaemonsCgroupName(paths.dir)}/cgroup.procs`;
  await execa('sh', ['-c', `echo ${writer.pid} > ${cgroupProcs}`]);
  writer.stdin!.end('go\n');
  const { stdout } = await writer;
  const rate = (mib * MiB) / elapsedSeconds(stdout).seconds;
  t.diagnostic(`a process of the daemons' cgroup wrote ${mib} MiB to the runtime disk at ${(rate / MiB).toFixed(1)} MiB/s (budget ${BUDGET / MiB})`);
  assert.ok(rate <= BUDGET * TOLERANCE, `${(rate / MiB).toFixed(1)} MiB/s, over the budget of ${BUDGET / MiB} MiB/s`);
  // The node's dockerd and containerd are members of that cgroup.
  const members = (await readFile(cgroupProcs, 'utf8')).split('\n').filter(Boolean).map(Number);
  const dockerd = Number((await readFile(paths.dockerPid, 'utf8')).trim());
  assert.ok(members.includes(dockerd), 'dockerd is in the budgeted cgroup');
});
