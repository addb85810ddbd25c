import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { lstat, readdir, readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { leftovers, startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { testCliCommand, repoRoot } from '../test/helpers/real.js';
import type { PoolView } from './pool.js';
import { removeDiskStoreIfUnused } from './local/disk-store.js';

// prepull.mode: preloaded-disk. Real loop disks, an XFS store with reflinks, real dockerds: root.
let fixture: PoolFixture;
before(async () => {
  fixture = await startPoolFixture({ dataLayers: 2, layerBytes: 4 << 20, seed: 'preloaded' });
});
after(async () => {
  await fixture?.stop();
  // Also when a test failed before its pool existed: nothing stays mounted.
  if (fixture) await removeDiskStoreIfUnused(fixture.stateDir, { force: true }).catch(() => {});
});

const spec = (image: string, nodes = 2) => ({ name: 'pre', nodes, disks: { runtime: '512M', workload: '256M' }, images: [image], prepull: { mode: 'preloaded-disk' } });
const store = () => join(fixture.stateDir, 'disk-store');
const baked = async () => (await readdir(join(store(), 'baked'))).filter((name) => name.endsWith('.img'));

test('nodes start from one baked runtime disk, cloned copy-on-write, and still verify the image by digest', { timeout: 600_000 }, async () => {
  const file = await fixture.writeSpec('pre', spec(fixture.image));
  const bake = await fixture.cli(['--json', 'pool', 'bake', '-f', file]);
  assert.equal(bake.exitCode, 0, bake.stderr);
  assert.equal(JSON.parse(bake.stdout).made, true);
  const again = await fixture.cli(['--json', 'pool', 'bake', '-f', file]);
  assert.equal(JSON.parse(again.stdout).made, false, 'baked once per digest');
  assert.equal((await baked()).length, 1);

  const applied = await fixture.cli(['--json', 'pool', 'apply', '-f', file]);
  assert.equal(applied.exitCode, 0, applied.stderr);
  const view = JSON.parse(applied.stdout).pool as PoolView;
  assert.deepEqual(view.nodes.map((node) => node.phase), ['Ready', 'Ready']);
  const engineIds = new Set<string>();
  for (const node of view.nodes) {
    const dir = fixture.manager.store.nodeDir('pre', node.id);
    // The runtime disk is a clone in the store; the node dir names it.
    assert.ok((await lstat(join(dir, 'runtime.img'))).isSymbolicLink());
    assert.equal(await realpath(join(dir, 'runtime.img')), join(store(), 'nodes', 'pre', node.id, 'runtime.img'));
    // Verified, not pulled: the image was on the disk before the runtime started.
    const events = (await readFile(join(dir, 'events.jsonl'), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { event: string });
    assert.ok(events.some((event) => event.event === 'image-verified'), 'the agent verified the image by digest');
    assert.ok(!events.some((event) => event.event === 'pull-started'), 'nothing was pulled');
    // Docker 23+ keeps an engine id in the data-root: the bake leaves none, so each node makes its own.
    const engineId = join(dir, 'runtime', 'docker', 'engine-id');
    if (existsSync(engineId)) engineIds.add(readFileSync(engineId, 'utf8'));
  }
  assert.ok(engineIds.size === 0 || engineIds.size === 2, 'no two nodes share an engine id');

  // A build sees the image's content.
  const exec = await fixture.cli(['pool', 'exec', 'pre', '--', 'sh', '-c', 'ls /data']);
  assert.equal(exec.exitCode, 0, exec.stderr);
  assert.deepEqual(exec.stdout.trim().split('\n'), ['blob0.bin', 'blob1.bin']);

  // A new digest bakes again and the pool's old baked disk goes; nodes keep their clones.
  const next = await fixture.pushImage('ci/build', { dataLayers: 1, layerBytes: 1 << 20, seed: 'preloaded-2' });
  const before = await baked();
  const rebake = await fixture.cli(['--json', 'pool', 'bake', '-f', await fixture.writeSpec('pre', spec(next))]);
  assert.equal(rebake.exitCode, 0, rebake.stderr);
  assert.equal(JSON.parse(rebake.stdout).made, true);
  const after = await baked();
  assert.equal(after.length, 1);
  assert.notDeepEqual(after, before);

  const deleted = await fixture.cli(['--json', 'pool', 'delete', 'pre']);
  assert.equal(deleted.exitCode, 0, deleted.stderr);
  assert.deepEqual(await leftovers(fixture.stateDir), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  assert.ok(!existsSync(join(fixture.stateDir, 'disk-store.xfs')), 'the store goes with the last pool');
});

test('a bake killed half-way leaves no disk a node could start from; the next bake sweeps it and makes a whole one', { timeout: 600_000 }, async () => {
  // Big enough that its pull takes a while: the kill lands while the throwaway engine fills the disk.
  const image = await fixture.pushImage('ci/big', { dataLayers: 4, layerBytes: 24 << 20, seed: 'preloaded-big' });
  const file = await fixture.writeSpec('pre', spec(image, 1));
  const cli = spawn(process.execPath, [...testCliCommand(), 'pool', 'bake', '-f', file], {
    cwd: repoRoot,
    env: { ...process.env, BUILDFLEET_STATE_DIR: fixture.stateDir },
    detached: true,
    stdio: 'ignore',
  });
  // Killed, with the engine it started (its process group), once the half-baked disk exists.
  const deadline = Date.now() + 120_000;
  const filling = async () => {
    const names = existsSync(join(store(), 'baked')) ? await readdir(join(store(), 'baked')) : [];
    return names.some((name) => name.startsWith('.bake-mnt-') && existsSync(join(store(), 'baked', name, 'docker', 'image')));
  };
  while (!(await filling())) {
    assert.ok(Date.now() < deadline, 'the bake started');
    await sleep(20);
  }
  process.kill(-cli.pid!, 'SIGKILL');
  await new Promise((resolve) => cli.once('exit', resolve));
  assert.deepEqual(await baked(), [], 'no baked disk from the killed run');

  const applied = await fixture.cli(['--json', 'pool', 'apply', '-f', file]);
  assert.equal(applied.exitCode, 0, applied.stderr);
  assert.deepEqual((JSON.parse(applied.stdout).pool as PoolView).nodes.map((node) => node.phase), ['Ready']);
  const left = await readdir(join(store(), 'baked'));
  assert.equal(left.filter((name) => name.startsWith('.bake-')).length, 0, `swept: ${left.join(' ')}`);
  assert.equal((await baked()).length, 1);
  assert.equal((await fixture.cli(['pool', 'delete', 'pre'])).exitCode, 0);
  assert.deepEqual(await leftovers(fixture.stateDir), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
});
