import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { MemoryProvider } from '../test/helpers/memory-provider.js';
import { waitFor } from '../test/helpers/wait.js';
import { execJob } from './jobs.js';
import { parsePoolSpec, type PoolSpec } from './pool-spec/pool-spec.js';
import { PoolManager } from './pool.js';
import type { Released } from './provider.js';
import { StateStore } from './state/store.js';

/**
 * The roll executor driven through the provider interface by an in-memory provider that checks,
 * at every cordon and every delete, that the pool still has as many serving nodes (Ready, not
 * cordoned) as its spec asks for.
 */

class WatchedProvider extends MemoryProvider {
  /** The fewest serving nodes seen right after any cordon or delete, per pool, and the most nodes at once. */
  readonly lowest = new Map<string, number>();
  readonly most = new Map<string, number>();

  private async observe(pool: string): Promise<void> {
    const ids = await this.listNodes(pool);
    let serving = 0;
    for (const id of ids) {
      const [node, status] = await Promise.all([this.describeNode(pool, id), this.status.read(pool, id)]);
      if (status?.phase === 'Ready' && !node.cordoned) serving++;
    }
    this.lowest.set(pool, Math.min(this.lowest.get(pool) ?? Infinity, serving));
    this.most.set(pool, Math.max(this.most.get(pool) ?? 0, ids.length));
  }

  override async createNode(spec: PoolSpec, id: string, images: Parameters<MemoryProvider['createNode']>[2]): Promise<void> {
    await super.createNode(spec, id, images);
    await this.observe(spec.name);
  }

  override async cordon(pool: string, id: string, reason: string): Promise<void> {
    await super.cordon(pool, id, reason);
    await this.observe(pool);
  }

  override async deleteNode(pool: string, id: string): Promise<Released> {
    const released = await super.deleteNode(pool, id);
    await this.observe(pool);
    return released;
  }
}

let stateDir: string;
let memory: WatchedProvider;
let manager: PoolManager;
const lines: string[] = [];
const digestOf = (reference: string) => `sha256:${createHash('sha256').update(reference).digest('hex')}`;

before(async () => {
  stateDir = await mkdtemp('/tmp/bf-roll-');
  memory = new WatchedProvider(16);
  manager = new PoolManager(new StateStore(stateDir), { providers: () => memory, log: (line) => lines.push(line), pollMs: 50 });
  // Pinning asks a registry; here each tag has a digest of its own.
  manager.pinImages = async (spec: PoolSpec) => spec.images.map((reference) => ({ reference, pinned: `${reference.replace(/:[^:/]+$/, '')}@${digestOf(reference)}`, digest: digestOf(reference) }));
});

after(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const spec = (name: string, nodes: number, image = 'registry.test/ci/build:1') => parsePoolSpec({ name, nodes, disks: { runtime: '1G', workload: '2G' }, images: [image] });
const pinnedOf = (reference: string) => `${reference.replace(/:[^:/]+$/, '')}@${digestOf(reference)}`;
const quiet = () => new Writable({ write: (_chunk, _encoding, done) => done() });

async function nodeImages(pool: string): Promise<Array<[string, string | undefined]>> {
  const view = await manager.status(pool);
  return Promise.all(view.nodes.map(async (node) => [node.id, (await memory.describeNode(pool, node.id)).assigned?.images[0]?.pinned] as [string, string | undefined]));
}

test('pool roll, surge 1: each new node is Ready before an old one is cordoned; the pool never serves fewer than asked', async () => {
  await manager.apply(spec('three', 3));
  memory.calls.length = 0;
  memory.lowest.delete('three');
  const next = 'registry.test/ci/build:2';
  const { plan, result, pool } = await manager.roll('three', [next]);
  assert.deepEqual(plan.add, ['n4', 'n5', 'n6']);
  assert.deepEqual(result?.removed, ['n1', 'n2', 'n3']);
  const order = memory.calls.filter((call) => /^(createNode|cordon|deleteNode)/.test(call));
  assert.deepEqual(order, [
    'createNode three n4', 'cordon three n1 roll', 'deleteNode three n1',
    'createNode three n5', 'cordon three n2 roll', 'deleteNode three n2',
    'createNode three n6', 'cordon three n3 roll', 'deleteNode three n3',
  ]);
  assert.ok(!memory.calls.some((call) => call.startsWith('updateNode')), 'a roll replaces nodes, it does not update them in place');
  assert.equal(memory.lowest.get('three'), 3, 'never fewer than 3 serving');
  assert.equal(memory.most.get('three'), 4, 'at most one node beyond the count');
  assert.deepEqual(await nodeImages('three'), [['n4', pinnedOf(next)], ['n5', pinnedOf(next)], ['n6', pinnedOf(next)]]);
  assert.deepEqual(pool?.nodes.map((node) => node.phase), ['Ready', 'Ready', 'Ready']);
  assert.deepEqual((await manager.store.requirePool('three')).spec.images, [next], 'the record takes the new image');
  assert.ok(lines.some((line) => /roll: creating three-n4 with registry\.test\/ci\/build@sha256:/.test(line)));
});

test('a build running on an old node finishes before that node is deleted', async () => {
  await manager.apply(spec('busy', 2));
  memory.lowest.delete('busy');
  const job = execJob(manager, 'busy', ['wait-for', 'busy-build'], { stdout: quiet(), stderr: quiet() });
  await waitFor('the build on busy-n1', 5000, async () => (await memory.describeNode('busy', 'n1')).runningJobs === 1);
  const rolling = manager.roll('busy', ['registry.test/ci/build:2'], { surge: 2 });
  await waitFor('busy-n1 cordoned', 10_000, async () => memory.calls.includes('cordon busy n1 roll'));
  await new Promise((resolve) => setTimeout(resolve, 1200));
  assert.ok(!memory.calls.includes('deleteNode busy n1'), 'n1 waits for its build');
  assert.deepEqual(await memory.listNodes('busy'), ['n1', 'n2', 'n3', 'n4']);
  memory.release('busy-build');
  assert.equal((await job).exitCode, 0);
  // A provider counts a build until its client has collected its end (NodeDescription.runningJobs).
  assert.ok(!memory.calls.includes('deleteNode busy n1'), 'n1 stays until the build\'s client has its exit code');
  const { result } = await rolling;
  assert.deepEqual(result?.removed, ['n1', 'n2']);
  assert.deepEqual(await memory.listNodes('busy'), ['n3', 'n4']);
  assert.equal(memory.lowest.get('busy'), 2);
});

test('a drain deadline cuts a build that runs too long', async () => {
  await manager.apply(spec('slow', 1));
  void execJob(manager, 'slow', ['wait-for', 'never'], { stdout: quiet(), stderr: quiet() });
  await waitFor('the build on slow-n1', 5000, async () => (await memory.describeNode('slow', 'n1')).runningJobs === 1);
  const started = Date.now();
  await manager.roll('slow', ['registry.test/ci/build:2'], { drainTimeoutSeconds: 1 });
  assert.ok(Date.now() - started < 5000);
  assert.deepEqual(await memory.listNodes('slow'), ['n2']);
  assert.ok(lines.some((line) => /drain deadline passed: deleting with builds still running on slow-n1 \(1\)/.test(line)));
});

test('a new node that cannot pull its image stops the roll: it is removed, the old nodes keep serving', async () => {
  await manager.apply(spec('bad', 2));
  memory.calls.length = 0;
  const broken = 'registry.test/ci/build:broken';
  memory.failPulls(digestOf(broken));
  const err = await manager.roll('bad', [broken]).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof BuildfleetError);
  assert.equal(err.kind, 'environment');
  assert.ok(!err.message.includes('\n'), 'one line');
  assert.match(err.message, /^roll of pool bad stopped: bad-n3 cannot pull its images: registry\.test\/ci\/build@sha256:\w+: manifest unknown .*; removed the new node\(s\) bad-n3; 2 old node\(s\) still serving$/);
  assert.ok(memory.calls.includes('deleteNode bad n3'));
  assert.ok(!memory.calls.some((call) => call.startsWith('cordon')), 'no old node was touched');
  const view = await manager.status('bad');
  assert.deepEqual(view.nodes.map((node) => [node.id, node.phase, node.cordoned]), [['n1', 'Ready', false], ['n2', 'Ready', false]]);
  assert.deepEqual(await nodeImages('bad'), [['n1', pinnedOf('registry.test/ci/build:1')], ['n2', pinnedOf('registry.test/ci/build:1')]]);
  assert.deepEqual((await manager.store.requirePool('bad')).spec.images, ['registry.test/ci/build:1'], 'the record keeps the old image');
});

test('pool apply with a new image rolls the nodes the same way; a dry run of a roll changes nothing', async () => {
  await manager.apply(spec('applied', 2));
  memory.calls.length = 0;
  const next = spec('applied', 2, 'registry.test/ci/build:3');
  const dry = await manager.apply(next, { dryRun: true });
  assert.deepEqual(dry.plan.roll, ['n1', 'n2']);
  const dryRoll = await manager.roll('applied', ['registry.test/ci/build:3'], { dryRun: true });
  assert.deepEqual(dryRoll.plan.steps.map((step) => step.action), ['create', 'wait-ready', 'cordon', 'drain', 'delete', 'create', 'wait-ready', 'cordon', 'drain', 'delete']);
  assert.ok(!memory.calls.some((call) => /^(createNode|cordon|deleteNode|updateNode)/.test(call)), 'dry runs change nothing');

  memory.lowest.delete('applied');
  await manager.apply(next);
  const order = memory.calls.filter((call) => /^(createNode|cordon|deleteNode|updateNode)/.test(call));
  assert.deepEqual(order, ['createNode applied n3', 'cordon applied n1 roll', 'deleteNode applied n1', 'createNode applied n4', 'cordon applied n2 roll', 'deleteNode applied n2']);
  assert.equal(memory.lowest.get('applied'), 2);
  assert.deepEqual(await nodeImages('applied'), [['n3', pinnedOf('registry.test/ci/build:3')], ['n4', pinnedOf('registry.test/ci/build:3')]]);
});

test('pool roll refuses bad input with one line', async () => {
  await assert.rejects(manager.roll('nosuch', ['registry.test/ci/build:2']), (err: BuildfleetError) => err.kind === 'not-found');
  await manager.apply(spec('input', 1));
  await assert.rejects(manager.roll('input', []), /give the new image with --image REF/);
  await assert.rejects(manager.roll('input', ['registry.test/ci/build:2'], { surge: 0 }), /--surge must be a whole number >= 1, got 0/);
});
