import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { leftovers, startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { testCliCommand, repoRoot } from '../test/helpers/real.js';
import type { PoolView } from './pool.js';

// Real loop disks and real dockerds: needs root, as CI is.
let fixture: PoolFixture;
before(async () => {
  fixture = await startPoolFixture();
});
after(async () => {
  await fixture?.stop();
});

const json = <T>(stdout: string): T => JSON.parse(stdout) as T;
const disks = ['--runtime-disk', '256M', '--workload-disk', '256M'];

test('create 2 nodes, resize to 3 then 1, status with phase times, delete leaves nothing', { timeout: 300_000 }, async () => {
  const created = await fixture.cli(['--json', 'pool', 'create', 'grow', '--nodes', '2', ...disks, '--image', fixture.image]);
  assert.equal(created.exitCode, 0, created.stderr);
  const pool = json<{ pool: PoolView }>(created.stdout).pool;
  assert.deepEqual(pool.nodes.map((node) => [node.name, node.phase]), [['grow-n1', 'Ready'], ['grow-n2', 'Ready']]);
  for (const node of pool.nodes) {
    assert.deepEqual(node.transitions.map((t) => t.phase), ['Provisioning', 'RuntimeReady', 'Pulling', 'Ready']);
    assert.ok(node.phaseTimes.runtimeMs! > 0 && node.phaseTimes.pullMs! > 0 && node.phaseTimes.readyMs! >= node.phaseTimes.runtimeMs!);
    assert.deepEqual(node.images.map((image) => image.present), [true]);
    // The runtime's data-root is on the runtime disk, the workload disk is mounted for builds.
    assert.match(readFileSync('/proc/mounts', 'utf8'), new RegExp(`${node.disks.workload.mountPoint} ext4`));
  }

  const bigger = await fixture.cli(['--json', 'pool', 'resize', 'grow', '--nodes', '3']);
  assert.equal(bigger.exitCode, 0, bigger.stderr);
  const grown = json<{ plan: { add: string[] }; pool: PoolView }>(bigger.stdout);
  assert.deepEqual(grown.plan.add, ['n3']);
  assert.deepEqual(grown.pool.nodes.map((node) => node.phase), ['Ready', 'Ready', 'Ready']);

  const smaller = await fixture.cli(['--json', 'pool', 'resize', 'grow', '--nodes', '1']);
  assert.equal(smaller.exitCode, 0, smaller.stderr);
  assert.deepEqual(json<{ plan: { remove: string[] } }>(smaller.stdout).plan.remove, ['n2', 'n3']);
  const removedDirs = ['n2', 'n3'].map((id) => fixture.manager.store.nodeDir('grow', id));
  for (const dir of removedDirs) assert.deepEqual(await leftovers(dir), { processes: [], mounts: [], loopDevices: [], cgroups: [] });

  const status = await fixture.cli(['pool', 'status', 'grow']);
  assert.equal(status.exitCode, 0, status.stderr);
  assert.match(status.stdout, /grow \(local\): 1\/1 nodes Ready/);
  assert.match(status.stdout, /grow-n1\s+Ready\s+0\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d/);
  const statusJson = json<PoolView>((await fixture.cli(['--json', 'pool', 'status', 'grow'])).stdout);
  assert.deepEqual(statusJson.nodes.map((node) => node.id), ['n1']);

  const poolDir = fixture.manager.store.poolDir('grow');
  const deleted = await fixture.cli(['pool', 'delete', 'grow']);
  assert.equal(deleted.exitCode, 0, deleted.stderr);
  assert.match(deleted.stdout, /deleted pool grow: 1 node/);
  assert.deepEqual(await leftovers(poolDir), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  assert.equal(existsSync(poolDir), false);
});

test('delete cleans up after the manager was killed mid-create', { timeout: 300_000 }, async () => {
  const poolDir = fixture.manager.store.poolDir('crash');
  const manager = spawn(process.execPath, [...testCliCommand(), 'pool', 'create', 'crash', '--nodes', '2', ...disks, '--image', fixture.image], {
    cwd: repoRoot,
    env: { ...process.env, BUILDFLEET_STATE_DIR: fixture.stateDir },
    stdio: 'ignore',
  });
  // Kill it once it has mounted a disk: disks, loop devices and maybe agents and dockerds exist.
  for (let i = 0; i < 600 && (await leftovers(poolDir)).mounts.length === 0; i++) await sleep(50);
  await sleep(300);
  manager.kill('SIGKILL');
  const before = await leftovers(poolDir);
  assert.ok(before.mounts.length > 0 && before.loopDevices.length > 0, 'the kill came after disks were made');

  const status = await fixture.cli(['--json', 'pool', 'status', 'crash']);
  assert.equal(status.exitCode, 0, status.stderr);
  const deleted = await fixture.cli(['pool', 'delete', 'crash']);
  assert.equal(deleted.exitCode, 0, deleted.stderr);
  assert.deepEqual(await leftovers(poolDir), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  assert.equal(existsSync(poolDir), false);
});

test('jobs run in the build image on a Ready node, with the workload disk as /workspace, and pass on the exit code', { timeout: 300_000 }, async () => {
  const created = await fixture.cli(['pool', 'create', 'jobs', '--nodes', '1', ...disks, '--image', fixture.image]);
  assert.equal(created.exitCode, 0, created.stderr);
  const job = await fixture.cli(['--json', 'pool', 'exec', 'jobs', '--', 'sh', '-c', 'echo built > /workspace/out; cat /proc/self/mountinfo | grep " /workspace "; exit 7']);
  assert.equal(job.exitCode, 7, job.stderr);
  const result = json<{ node: string; job: string }>(job.stdout);
  assert.equal(result.node, 'jobs-n1');
  const workload = fixture.manager.store.paths('jobs', 'n1').workloadMount;
  assert.equal(readFileSync(join(workload, 'jobs', result.job, 'out'), 'utf8'), 'built\n');
  // The job's output went to stderr (stdout is the JSON), and /workspace is a mount in the container.
  assert.match(job.stderr, / \/workspace /);
  await fixture.manager.delete('jobs');
});

test('apply: --dry-run prints the plan and changes nothing; a new image rolls the node: its replacement holds the image before the old node goes', { timeout: 300_000 }, async () => {
  const spec = { name: 'apply', nodes: 1, disks: { runtime: '256M', workload: '256M' }, images: [fixture.image] };
  const dry = await fixture.cli(['pool', 'apply', '-f', await fixture.writeSpec('apply', spec), '--dry-run']);
  assert.equal(dry.exitCode, 0, dry.stderr);
  assert.match(dry.stdout, /plan \(dry run, nothing changed\):\n {2}create pool apply \(provider local\)\n {2}create node apply-n1 \(runtime disk 0\.25 GiB/);
  assert.equal(existsSync(fixture.manager.store.poolDir('apply')), false);
  assert.equal((await fixture.cli(['pool', 'apply', '-f', await fixture.writeSpec('apply', spec)])).exitCode, 0);

  const next = await fixture.pushImage('ci/next', { dataLayers: 1, layerBytes: 1024 * 1024, seed: 'next' });
  const changed = await fixture.writeSpec('apply', { ...spec, images: [next] });
  const plan = await fixture.cli(['pool', 'apply', '-f', changed, '--dry-run']);
  assert.match(plan.stdout, /roll node apply-n1 to the new images \(a new node Ready first, then this one drained and deleted\)/);
  const applied = await fixture.cli(['--json', 'pool', 'apply', '-f', changed]);
  assert.equal(applied.exitCode, 0, applied.stderr);
  const view = (JSON.parse(applied.stdout) as { pool: PoolView }).pool;
  assert.deepEqual(view.nodes.map((node) => [node.id, node.phase, node.images.map((image) => image.present)]), [['n2', 'Ready', [true]]]);
  assert.deepEqual(await leftovers(fixture.manager.store.nodeDir('apply', 'n1')), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  const job = await fixture.cli(['pool', 'exec', 'apply', '--', 'ls', '/data']);
  assert.equal(job.exitCode, 0, job.stderr);
  assert.equal(job.stdout.trim(), 'blob0.bin', 'the job ran in the new image');
  await fixture.manager.delete('apply');
});
