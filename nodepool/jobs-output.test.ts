import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { waitFor } from '../test/helpers/wait.js';
import type { NodeStatus } from './state/store.js';

// What `pool exec` prints is a CI log: every line the job wrote, exactly once, in order, also
// when the node's runtime is restarted under the job. Real loop disks, dockerd and agent: root.
const POOL = 'logs';
let fixture: PoolFixture;
before(async () => {
  fixture = await startPoolFixture();
  const spec = await fixture.writeSpec(POOL, {
    name: POOL,
    nodes: 1,
    disks: { runtime: '256M', workload: '256M' },
    images: [fixture.image],
    probe: { intervalSeconds: 0.5, timeoutSeconds: 1, failureThreshold: 2 },
    // A short drain, so the build is still running when the agent restarts the runtime.
    remediation: { policy: 'drain-then-restart', drainTimeoutSeconds: 2, cooldownSeconds: 600 },
    liveRestore: true,
  });
  const applied = await fixture.cli(['pool', 'apply', '-f', spec]);
  assert.equal(applied.exitCode, 0, applied.stderr);
});
after(async () => {
  await fixture?.stop();
});

const lines = (text: string) => (text === '' ? [] : text.replace(/\n$/, '').split('\n'));
const numbered = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix} ${i + 1}`);

test('a job printing 20000 numbered lines fast on each stream gets all of them, in order', { timeout: 300_000 }, async () => {
  const script = 'i=1; while [ $i -le 20000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; exit 3';
  const job = await fixture.cli(['--quiet', 'pool', 'exec', POOL, '--', 'sh', '-c', script]);
  assert.equal(job.exitCode, 3, job.stderr.slice(-500));
  assert.deepEqual(lines(job.stdout), numbered('out', 20000));
  assert.deepEqual(lines(job.stderr), numbered('err', 20000));
});

test('a job keeps every line it prints before, during and after a runtime restart under it', { timeout: 300_000 }, async () => {
  // The job tees each line to a file on the workload disk as well: the record of what it printed.
  // It labels each line with the phase the test is in, and stops 5 lines after the restart.
  const script = [
    'touch /workspace/started; i=0; after=0',
    'while [ $after -lt 5 ] && [ $i -lt 600 ]; do',
    '  p=$(cat /workspace/phase 2>/dev/null || echo before)',
    '  echo "out $i $p" | tee -a /workspace/expected.out',
    '  echo "err $i $p" | tee -a /workspace/expected.err >&2',
    '  if [ "$p" = restarted ]; then after=$((after+1)); fi',
    '  i=$((i+1)); sleep 0.2',
    'done',
    'echo survived | tee -a /workspace/expected.out',
  ].join('\n');
  const job = fixture.cli(['--quiet', 'pool', 'exec', POOL, '--', 'sh', '-c', script]);
  const jobs = join(fixture.manager.store.paths(POOL, 'n1').workloadMount, 'jobs');
  const jobDir = await waitFor('the job to start', 30_000, async () => (await execa('find', [jobs, '-name', 'started'])).stdout.trim().replace(/\/started$/, ''));
  await waitFor('a few lines before the hang', 10_000, async () => existsSync(join(jobDir, 'expected.out')) && lines(readFileSync(join(jobDir, 'expected.out'), 'utf8')).length >= 3);

  // The drill: dockerd wedged (SIGSTOP); the agent finds it hung, drains 2 s, SIGKILLs and restarts it.
  const dockerPid = Number(readFileSync(fixture.manager.store.paths(POOL, 'n1').dockerPid, 'utf8').trim());
  writeFileSync(join(jobDir, 'phase'), 'hung\n');
  const hungAt = Date.now();
  process.kill(dockerPid, 'SIGSTOP');
  await waitFor('the runtime restarted', 60_000, async () => {
    const status = (await fixture.manager.store.readStatus(POOL, 'n1')) as NodeStatus;
    return status.transitions.some((t) => t.phase === 'RuntimeReady' && Date.parse(t.at) > hungAt);
  });
  writeFileSync(join(jobDir, 'phase'), 'restarted\n');

  const result = await job;
  assert.equal(result.exitCode, 0, result.stderr.slice(-500));
  const expectedOut = readFileSync(join(jobDir, 'expected.out'), 'utf8');
  const expectedErr = readFileSync(join(jobDir, 'expected.err'), 'utf8');
  // The drill did span the restart: lines from each phase, and the last one after it.
  for (const phase of ['before', 'hung', 'restarted']) assert.match(expectedOut, new RegExp(`^out \\d+ ${phase}$`, 'm'));
  assert.equal(lines(expectedOut).at(-1), 'survived');
  assert.deepEqual(lines(result.stdout), lines(expectedOut));
  assert.deepEqual(lines(result.stderr), lines(expectedErr));
});

test('a job whose node is deleted under it ends with one clear line instead of waiting for a runtime that never comes back', { timeout: 300_000 }, async () => {
  // A marker of its own: the jobs before it left their own `started` files in the workload dir.
  const job = fixture.cli(['pool', 'exec', POOL, '--', 'sh', '-c', 'touch /workspace/started-before-delete; echo going; sleep 600']);
  const jobs = join(fixture.manager.store.paths(POOL, 'n1').workloadMount, 'jobs');
  await waitFor('the job to start', 30_000, async () => (await execa('find', [jobs, '-name', 'started-before-delete'])).stdout.trim() !== '');
  // Straight through the provider, as a crash of the manager mid-drain would leave it: no drain, no wait.
  await (await fixture.manager.providerOf(POOL)).deleteNode(POOL, 'n1');
  const result = await job;
  assert.notEqual(result.exitCode, 0);
  assert.match(result.stderr.trim().split('\n').at(-1)!, /n1 was deleted before the end of its job could be read/);
});
