import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeRunnableImage } from '../bench/runnable-image.js';
import { openDestination } from '../imagebuilder/transports/index.js';
import { leftovers, startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { waitFor } from '../test/helpers/wait.js';
import { parsePoolSpec } from './pool-spec/pool-spec.js';
import type { PoolView } from './pool.js';
import type { RollPlan } from './roll-plan.js';

// Real loop disks, real dockerds, a real registry: needs root, as CI is. A 2-node pool rolls
// from image A to image B while a build runs on an old node, then fails to roll to an image
// whose layer the registry has lost.
let fixture: PoolFixture;
before(async () => {
  fixture = await startPoolFixture();
});
after(async () => {
  await fixture?.stop();
});

const pinnedDigest = (view: PoolView, id: string) => view.nodes.find((node) => node.id === id)?.images.map((image) => [image.pinned.split('@')[1], image.present]);

test('pool roll: a build running on an old node finishes; both nodes end on the new digest; an unpullable image stops the roll with the old nodes serving', { timeout: 600_000 }, async () => {
  const provider = fixture.manager.providerFor('local');
  // Every wait is bounded below the test's timeout, so a node that never comes up is named in the failure.
  await fixture.manager.apply(parsePoolSpec({ name: 'roll', nodes: 2, disks: { runtime: '256M', workload: '256M' }, images: [fixture.image] }), { timeoutMs: 120_000 });
  const next = `${fixture.registry.host}/ci/next:1`;
  const nextDigest = (await writeRunnableImage(await openDestination(next), { dataLayers: 1, layerBytes: 64 * 1024, seed: 'next' })).manifestDigest;

  // The build lands on n1 (the least busy, lowest id) and runs until the roll has cordoned n1
  // and is draining it (then the test lets it finish; 90 s at most): the roll must wait for it.
  const build = fixture.cli(['--json', 'pool', 'exec', 'roll', '--', 'sh', '-c', 'echo started; i=0; while [ ! -e /workspace/go ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done; sleep 1; echo done']);
  await waitFor('the build on roll-n1', 60_000, async () => (await provider.describeNode('roll', 'n1')).runningJobs === 1);
  const rolling = fixture.cli(['pool', 'roll', 'roll', '--image', next, '--timeout', '120']);
  await waitFor('roll-n1 cordoned', 120_000, async () => (await provider.describeNode('roll', 'n1')).cordoned);
  assert.equal((await provider.describeNode('roll', 'n1')).runningJobs, 1, 'the build still runs on the cordoned node');
  const jobs = join(fixture.manager.store.paths('roll', 'n1').workloadMount, 'jobs');
  await writeFile(join(jobs, (await readdir(jobs))[0]!, 'go'), '');
  const [rolled, built] = await Promise.all([rolling, build]);

  assert.equal(built.exitCode, 0, built.stderr);
  assert.equal(JSON.parse(built.stdout).node, 'roll-n1', 'the build ran on an old node');
  // With --json the job's output goes to stderr, whole.
  assert.equal(built.stderr, 'started\ndone');
  assert.equal(rolled.exitCode, 0, rolled.stderr);
  assert.match(rolled.stdout, /^rolled pool roll to .*ci\/next@sha256:\w+ in [\d.]+ s: created 2, removed 2 node\(s\)\npool roll \(local\): 2\/2 nodes Ready/);
  // Progress on stderr: the surge node is Ready first, then the old node waits for its build.
  assert.match(rolled.stderr, /roll: creating roll-n3 with[^]*roll: roll-n3 Ready\nroll: cordoning roll-n1\nwaiting for builds to finish on roll-n1 \(1\)\nroll: deleting roll-n1\nroll: creating roll-n4[^]*roll: roll-n4 Ready\nroll: cordoning roll-n2\nroll: deleting roll-n2$/);
  const status = await fixture.manager.status('roll');
  assert.deepEqual(status.nodes.map((node) => [node.id, node.phase]), [['n3', 'Ready'], ['n4', 'Ready']]);
  for (const id of ['n3', 'n4']) {
    assert.deepEqual(pinnedDigest(status, id), [[nextDigest, true]], `${id} holds B by digest`);
    assert.equal((await provider.describeNode('roll', id)).assigned?.images[0]?.digest, nextDigest);
  }
  for (const id of ['n1', 'n2']) assert.deepEqual(await leftovers(fixture.manager.store.nodeDir('roll', id)), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  assert.deepEqual((await fixture.manager.store.requirePool('roll')).spec.images, [next]);
  const dry = await fixture.cli(['--json', 'pool', 'roll', 'roll', '--image', next, '--dry-run']);
  assert.equal(dry.exitCode, 0, dry.stderr);
  assert.deepEqual((JSON.parse(dry.stdout) as { plan: RollPlan }).plan.steps, [], 'a pool on the image already has nothing to roll');

  // An image whose manifest and config resolve (so it pins) but whose layer is gone: no node can pull it.
  const broken = `${fixture.registry.host}/ci/broken:1`;
  const layers = (await writeRunnableImage(await openDestination(broken), { dataLayers: 1, layerBytes: 64 * 1024, seed: 'broken' })).layers;
  const hex = layers.at(-1)!.digest.slice('sha256:'.length);
  await rm(join(fixture.registry.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex), { recursive: true });
  const failed = await fixture.cli(['pool', 'roll', 'roll', '--image', broken, '--timeout', '120']);
  assert.equal(failed.exitCode, 8, failed.stderr);
  const errorLines = failed.stderr.trim().split('\n').filter((line) => !line.startsWith('roll:'));
  assert.equal(errorLines.length, 1, failed.stderr);
  assert.match(errorLines[0]!, /roll of pool roll stopped: roll-n5 cannot pull its images: .*ci\/broken@sha256:\w+.*; removed the new node\(s\) roll-n5; 2 old node\(s\) still serving/);
  const after = await fixture.manager.status('roll');
  assert.deepEqual(after.nodes.map((node) => [node.id, node.phase, node.cordoned]), [['n3', 'Ready', false], ['n4', 'Ready', false]]);
  assert.deepEqual(pinnedDigest(after, 'n3'), [[nextDigest, true]]);
  assert.deepEqual(await leftovers(fixture.manager.store.nodeDir('roll', 'n5')), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  assert.deepEqual((await fixture.manager.store.requirePool('roll')).spec.images, [next], 'the record keeps the image the nodes run');
});
