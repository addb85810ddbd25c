import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { MEMORY_NODE_RELEASE, MEMORY_PHASE_OFFSETS, MEMORY_POOL_RELEASE, MemoryProvider } from '../test/helpers/memory-provider.js';
import { waitFor } from '../test/helpers/wait.js';
import { execJob, type JobResult } from './jobs.js';
import { parsePoolSpec, type PoolSpec } from './pool-spec/pool-spec.js';
import { PoolManager } from './pool.js';
import { StateStore } from './state/store.js';

/**
 * The manager knows providers only by their interface: driven with an in-memory provider it
 * creates, resizes (drain included), reports, runs jobs and deletes without root, disks or
 * daemons. Everything it reports about nodes must be what that provider said, so a manager that
 * went around the provider (node dirs, status.json, cgroups, pidfiles, a Docker socket, a root
 * check of its own) fails here.
 */

let stateDir: string;
let store: StateStore;
let memory: MemoryProvider;
let manager: PoolManager;
const realGetuid = process.getuid;

before(async () => {
  stateDir = await mkdtemp('/tmp/bf-memory-');
  store = new StateStore(stateDir);
  memory = new MemoryProvider(4);
  manager = new PoolManager(store, { providers: () => memory });
  // Pinning asks a registry; that is the manager's own work, not the provider's: fixed digests here.
  manager.pinImages = async (spec: PoolSpec) =>
    spec.images.map((reference, i) => {
      const digest = `sha256:${String(i + 1).repeat(64)}`;
      return { reference, pinned: `${reference.replace(/:[^:/]+$/, '')}@${digest}`, digest };
    });
  // Not root: any root check left in the manager (rather than in the provider) would refuse.
  process.getuid = () => 65534;
});

after(async () => {
  process.getuid = realGetuid;
  await rm(stateDir, { recursive: true, force: true });
});

const IMAGE = 'registry.test/ci/build:1';
const PINNED = `registry.test/ci/build@sha256:${'1'.repeat(64)}`;
const spec = (nodes: number) => parsePoolSpec({ name: 'mem', nodes, disks: { runtime: '1G', workload: '2G' }, images: [IMAGE] });

function sink(): Writable & { text: string } {
  const out = new Writable({
    write(chunk: Buffer, _encoding, done) {
      out.text += chunk.toString();
      done();
    },
  }) as Writable & { text: string };
  out.text = '';
  return out;
}

test('the manager drives a provider it knows only by its interface: create, resize, status, exec, delete', { timeout: 60_000 }, async () => {
  // Create: the provider is asked for access and room, makes the nodes, and its status source says when they are Ready.
  const created = await manager.apply(spec(2), { mustBeNew: true, timeoutMs: 10_000 });
  assert.deepEqual(created.plan.add, ['n1', 'n2']);
  assert.deepEqual(memory.calls.splice(0), ['requireAccess apply', 'checkNewNodes mem n1,n2', 'createNode mem n1', 'createNode mem n2']);
  const pool = created.pool!;
  assert.equal(pool.provider, 'local');
  assert.deepEqual(pool.nodes.map((node) => [node.name, node.phase, node.agentAlive, node.runningJobs]), [['mem-n1', 'Ready', true, 0], ['mem-n2', 'Ready', true, 0]]);
  for (const node of pool.nodes) {
    assert.deepEqual(node.transitions.map((t) => t.phase), ['Provisioning', 'RuntimeReady', 'Pulling', 'Ready']);
    assert.deepEqual(node.phaseTimes, { runtimeMs: MEMORY_PHASE_OFFSETS.RuntimeReady, pullMs: MEMORY_PHASE_OFFSETS.Ready - MEMORY_PHASE_OFFSETS.RuntimeReady, readyMs: MEMORY_PHASE_OFFSETS.Ready });
    assert.deepEqual(node.images, [{ pinned: PINNED, present: true }]);
    assert.equal(node.metricsUrl, `memory://mem/${node.id}/metrics`);
    assert.deepEqual(node.disks, { runtime: { sizeBytes: 1024 ** 3 }, workload: { sizeBytes: 2 * 1024 ** 3, mountPoint: '/memory/workload' } });
    assert.deepEqual(node.details, { provider: 'memory' });
  }
  // The pool record is the manager's; the nodes are the provider's alone.
  assert.ok(existsSync(store.poolDir('mem')));
  assert.deepEqual(await store.listNodeIds('mem'), []);

  // A dry run asks the provider for room as the apply would, and fails with the same line.
  const refusals: string[] = [];
  for (const dryRun of [true, false]) {
    await assert.rejects(manager.apply(spec(5), { dryRun }), (err: unknown) => err instanceof BuildfleetError && refusals.push(err.message) > 0);
  }
  assert.equal(refusals[0], refusals[1]);
  assert.match(refusals[0]!, /room for 4 nodes, 5 asked/);
  memory.calls.splice(0);

  // Resize up.
  const grown = await manager.resize('mem', 3, { timeoutMs: 10_000 });
  assert.deepEqual(grown.plan.add, ['n3']);
  assert.deepEqual(grown.pool!.nodes.map((node) => node.phase), ['Ready', 'Ready', 'Ready']);
  assert.ok(memory.calls.includes('createNode mem n3'));

  // Exec: the job goes to the least busy Ready node, in that node's build image, through the provider.
  const output = sink();
  const failed = await execJob(manager, 'mem', ['exit', '3'], { stdout: output });
  assert.equal(failed.exitCode, 3);
  assert.equal(failed.node, 'mem-n1');
  assert.equal(output.text, `ran exit 3 on mem-n1 in ${PINNED}\n`);

  // Two jobs that run until released: the first on n1, the second on n2 (n1 is busier now).
  const held: Array<Promise<JobResult>> = [
    execJob(manager, 'mem', ['wait-for', 'a'], { stdout: sink() }),
  ];
  await waitFor('the first job to run', 5_000, async () => (await manager.status('mem')).nodes[0]!.runningJobs === 1);
  held.push(execJob(manager, 'mem', ['wait-for', 'b'], { stdout: sink() }));
  await waitFor('the second job to run', 5_000, async () => (await manager.status('mem')).nodes[1]!.runningJobs === 1);
  assert.deepEqual((await manager.status('mem')).nodes.map((node) => node.runningJobs), [1, 1, 0]);

  // Resize down: n2 and n3 go; n3 at once, n2 (busy) is cordoned and drained first.
  memory.calls.splice(0);
  const shrinking = manager.resize('mem', 1);
  await waitFor('n3 deleted and n2 cordoned', 5_000, async () => memory.calls.includes('deleteNode mem n3') && memory.calls.includes('cordon mem n2 scale-down'));
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.ok(!memory.calls.includes('deleteNode mem n2'), 'a node with a running job is not deleted before it drains');
  const draining = (await manager.status('mem')).nodes.find((node) => node.id === 'n2')!;
  assert.deepEqual([draining.cordoned, draining.runningJobs], [true, 1]);
  memory.release('b');
  const shrunk = await shrinking;
  assert.deepEqual(shrunk.plan.remove, ['n2', 'n3']);
  assert.deepEqual(shrunk.pool!.nodes.map((node) => node.id), ['n1']);
  assert.ok(memory.calls.indexOf('cordon mem n2 scale-down') < memory.calls.indexOf('deleteNode mem n2'));
  const drained = await held[1]!;
  assert.deepEqual([drained.node, drained.exitCode], ['mem-n2', 0]);
  memory.release('a');
  assert.equal((await held[0]!).node, 'mem-n1');

  // Status: what the provider and its status source say, nothing else.
  const status = await manager.status('mem');
  assert.deepEqual(status.nodes.map((node) => [node.id, node.phase, node.cordoned, node.runningJobs]), [['n1', 'Ready', false, 0]]);
  assert.equal(status.desiredNodes, 1);

  // Delete: every node through the provider, then its pool clean-up; the totals are what it released.
  memory.calls.splice(0);
  const deleted = await manager.delete('mem');
  assert.deepEqual(memory.calls, ['requireAccess delete', 'deleteNode mem n1', 'cleanupPool mem']);
  assert.deepEqual(deleted, {
    nodes: 1,
    processes: MEMORY_NODE_RELEASE.processes + MEMORY_POOL_RELEASE.processes,
    mounts: MEMORY_NODE_RELEASE.mounts + MEMORY_POOL_RELEASE.mounts,
    loopDevices: MEMORY_NODE_RELEASE.loopDevices + MEMORY_POOL_RELEASE.loopDevices,
  });
  assert.equal(existsSync(store.poolDir('mem')), false);
  assert.deepEqual(await memory.listNodes('mem'), []);
});
