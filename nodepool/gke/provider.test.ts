import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errorOf } from '../../test/helpers/assertions.js';
import { waitFor } from '../../test/helpers/wait.js';
import { FAST_POLLS, gkeSpec, tokenClient } from '../../test/fakes/gke/connect.js';
import { FakeGke, type RecordedRequest } from '../../test/fakes/gke/server.js';
import { MemoryClusterNodes } from '../../test/fakes/gke/memory-cluster-nodes.js';
import { StateStore } from '../state/store.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import { builtInProviders } from '../providers.js';
import { formatWireRequests, wireRequests } from './dry-run.js';
import { GkeProvider } from './provider.js';
import { gkePoolName } from './requests.js';
import { planRotation, rotationRequests } from './rotation.js';

// The GKE provider through the provider seam, against the fake GKE (real client, REST on
// loopback) and an in-memory Kubernetes side fed by the fake's finished operations.

const spec = gkeSpec({ nodes: 2 });
const gke = spec.gke!;
const cluster = '/v1/projects/build-proj/locations/us-central1/clusters/builds';
const taint = gke.startupTaint.key;
let fake: FakeGke;
let nodes: MemoryClusterNodes;
let provider: GkeProvider;
let store: StateStore;
let root: string;

before(async () => {
  process.env.METADATA_SERVER_DETECTION = 'none';
  root = await mkdtemp(join(tmpdir(), 'gke-provider-'));
  store = new StateStore(root);
  fake = await FakeGke.start({ project: gke.project, location: gke.location, cluster: gke.cluster, token: 'tok', pollsToDone: 2 });
  nodes = new MemoryClusterNodes(taint);
  nodes.attach(fake);
  provider = new GkeProvider(store, {
    connection: { apiEndpoint: '127.0.0.1', port: fake.port, protocol: 'http', authClient: tokenClient('tok') },
    operations: FAST_POLLS,
    clusterNodes: () => nodes,
    registerTimeoutMs: 5_000,
    pollMs: 10,
  });
  await store.claimPool({ spec, createdAt: new Date().toISOString(), updatedAt: new Date().toISOString() });
});
after(async () => {
  nodes?.stop();
  await provider?.close();
  await fake?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

const wire = (requests: RecordedRequest[]) => requests.map((r) => ({ httpMethod: r.httpMethod, path: r.path, ...(r.body === undefined ? {} : { body: r.body }) }));

test('providers.ts gives the GKE provider for provider: gke, and it needs no root', () => {
  const resolved = builtInProviders('gke', store);
  assert.ok(resolved instanceof GkeProvider);
  assert.doesNotThrow(() => resolved.requireAccess('apply'));
});

test('creating the nodes of a new pool is one createNodePool with their count; nodes go Provisioning -> Pulling -> Ready', async () => {
  await Promise.all(['n1', 'n2'].map((id) => provider.createNode(spec, id, [])));
  const mutations = fake.mutations();
  assert.equal(mutations.length, 1, 'one operation for the whole apply');
  assert.equal(mutations[0]!.path, `${cluster}/nodePools`);
  assert.equal((mutations[0]!.body as { nodePool: { name: string; initialNodeCount: number } }).nodePool.initialNodeCount, 2);
  assert.deepEqual(await provider.listNodes('ci'), ['n1', 'n2']);
  const phases = new Set<string>();
  await waitFor('both nodes Ready', 5_000, async () => {
    const status = await provider.status.read('ci', 'n1');
    phases.add(status!.phase);
    return status!.phase === 'Ready' && (await provider.status.read('ci', 'n2'))!.phase === 'Ready';
  });
  assert.ok(phases.has('Ready'));
  const described = await provider.describeNode('ci', 'n1');
  assert.equal(described.details.gkeNodePool, gkePoolName(spec));
  assert.equal(described.cordoned, false);
});

test('resize up is one setNodePoolSize; deleting a node cordons and drains it, then the pool is one smaller', async () => {
  fake.requests.length = 0;
  const three = { ...spec, nodes: 3 };
  await provider.createNode(three, 'n3', []);
  await provider.deleteNode('ci', 'n3');
  const name = gkePoolName(spec);
  assert.deepEqual(wire(fake.mutations()), [
    { httpMethod: 'POST', path: `${cluster}/nodePools/${name}:setSize`, body: { nodeCount: 3 } },
    { httpMethod: 'POST', path: `${cluster}/nodePools/${name}:setSize`, body: { nodeCount: 2 } },
  ]);
  assert.deepEqual(nodes.calls.slice(-2).map((call) => call.split(' ')[0]), ['cordon', 'drain']);
  assert.equal((await provider.listNodes('ci')).length, 2);
});

test('a create that ends in error deletes the half-made node pool and says so in one line', async () => {
  const other = gkeSpec({ name: 'quota', nodes: 1, gke: { bootDisk: { sizeGb: 500 } } });
  await store.claimPool({ spec: other, createdAt: '', updatedAt: '' });
  fake.requests.length = 0;
  fake.failNextOperation('RESOURCE_EXHAUSTED', "Insufficient regional quota to satisfy request: resource 'SSD_TOTAL_GB'.");
  await assert.rejects(provider.createNode(other, 'n1', []), errorOf('environment', new RegExp(`^GKE quota exceeded for createNodePool ${gkePoolName(other)} .*SSD_TOTAL_GB.*; the half-made node pool ${gkePoolName(other)} was deleted$`)));
  assert.deepEqual(fake.mutations().map((r) => r.httpMethod), ['POST', 'DELETE']);
  assert.equal(fake.pools.has(gkePoolName(other)), false, 'nothing left behind');
});

test('without the Kubernetes side a GKE pool is refused before any call, in one line', async () => {
  const before = fake.requests.length;
  await assert.rejects(new GkeProvider(store).checkNewNodes(spec, ['n1']), errorOf('unsupported', /^pool ci: node-level calls on GKE need the Kubernetes integration \(kube\/\)/));
  assert.equal(fake.requests.length, before);
});

test('a machine type without local SSDs is refused before any call', async () => {
  const before = fake.requests.length;
  await assert.rejects(provider.checkNewNodes(gkeSpec({ gke: { machineType: 'e2-standard-4' } }), ['n1']), errorOf('unsupported', /^gke\.machineType: e2-standard-4 has no local SSDs/));
  assert.equal(fake.requests.length, before);
});

let rotationSent: ReturnType<typeof wire> = [];
let rotated: PoolSpec;

test('rotation: new pool, its nodes Ready and untainted, old nodes cordoned and drained, old pool deleted; never fewer Ready nodes than asked', async () => {
  rotated = gkeSpec({ nodes: 2, gke: { bootDisk: { sizeGb: 200 }, secondaryBootDisk: 'ci-images-2' } });
  const oldPool = gkePoolName(spec);
  const newPool = gkePoolName(rotated);
  const oldNodes = (await nodes.listPoolNodes(oldPool)).map((node) => node.name);
  fake.requests.length = 0;
  nodes.watchFrom();
  assert.equal(nodes.lowestServing, 2);
  const plan = await provider.rotate(spec, rotated, { pollMs: 10, readyTimeoutMs: 5_000 });
  assert.equal(plan?.newPool, newPool);
  rotationSent = wire(fake.mutations());
  assert.deepEqual(rotationSent.map((r) => `${r.httpMethod} ${r.path}`), [`POST ${cluster}/nodePools`, `DELETE ${cluster}/nodePools/${oldPool}`]);
  assert.equal((rotationSent[0]!.body as { nodePool: { config: { bootDisk: { sizeGb: string } } } }).nodePool.config.bootDisk.sizeGb, '200');
  assert.ok(nodes.lowestServing >= 2, `serving nodes dropped to ${nodes.lowestServing}`);
  for (const name of oldNodes) {
    const cordon = nodes.calls.findIndex((call) => call.startsWith(`cordon ${name} `));
    const drain = nodes.calls.findIndex((call) => call.startsWith(`drain ${name} `));
    assert.ok(cordon >= 0 && drain > cordon, `${name} cordoned, then drained`);
  }
  assert.deepEqual(await nodes.listPoolNodes(oldPool), []);
  assert.equal((await nodes.listPoolNodes(newPool)).filter((node) => node.ready && node.taints.length === 0).length, 2);
  assert.equal(planRotation(rotated, rotated), undefined, 'nothing fixed changed: no rotation');
});

test('--dry-run prints the exact requests the rotation sent, with no credentials and no network', async () => {
  const saved = { connect: net.Socket.prototype.connect, fetch: globalThis.fetch, creds: process.env.GOOGLE_APPLICATION_CREDENTIALS, home: process.env.HOME };
  const attempts: string[] = [];
  process.env.GOOGLE_APPLICATION_CREDENTIALS = join(root, 'no-such-credentials.json');
  process.env.HOME = join(root, 'no-home');
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    attempts.push(JSON.stringify(args[0]));
    throw new Error('network used in a dry run');
  } as typeof net.Socket.prototype.connect;
  globalThis.fetch = (async (input: unknown) => {
    attempts.push(String(input));
    throw new Error('fetch used in a dry run');
  }) as typeof fetch;
  let printed: Awaited<ReturnType<typeof wireRequests>>;
  try {
    printed = await wireRequests(rotationRequests(planRotation(spec, rotated)!));
  } finally {
    net.Socket.prototype.connect = saved.connect;
    globalThis.fetch = saved.fetch;
    if (saved.creds === undefined) delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    else process.env.GOOGLE_APPLICATION_CREDENTIALS = saved.creds;
    process.env.HOME = saved.home;
  }
  assert.deepEqual(attempts, []);
  assert.deepEqual(printed, rotationSent);
  const text = formatWireRequests(printed);
  assert.match(text, new RegExp(`^POST ${cluster}/nodePools\n\\{\n  "nodePool": \\{`));
  assert.match(text, new RegExp(`\n\nDELETE ${cluster}/nodePools/${gkePoolName(spec)}$`));
});

test('a rotation whose new nodes never become Ready deletes the new pool and leaves the old one serving', async () => {
  const slow = new MemoryClusterNodes(taint, { readyAfterMs: 60_000, untaintAfterMs: 60_000 });
  slow.attach(fake);
  const stuck = new GkeProvider(store, {
    connection: { apiEndpoint: '127.0.0.1', port: fake.port, protocol: 'http', authClient: tokenClient('tok') },
    operations: FAST_POLLS,
    clusterNodes: () => slow,
    pollMs: 10,
  });
  try {
    const wanted = gkeSpec({ nodes: 2, gke: { bootDisk: { sizeGb: 300 } } });
    const serving = gkePoolName(rotated);
    fake.requests.length = 0;
    await assert.rejects(stuck.rotate(rotated, wanted, { readyTimeoutMs: 300, pollMs: 10 }), errorOf('environment', new RegExp(`^node pool ${gkePoolName(wanted)}: 0 of 2 nodes Ready and untainted after 0\\.3 s \\(2 registered; .* not Ready`)));
    assert.deepEqual(fake.mutations().map((r) => `${r.httpMethod} ${r.path.split('/').at(-1)}`), ['POST nodePools', `DELETE ${gkePoolName(wanted)}`]);
    assert.deepEqual([...fake.pools.keys()], [serving], 'only the old pool is left');
    assert.equal(slow.calls.length, 0, 'no old node was cordoned');
  } finally {
    slow.stop();
    nodes.attach(fake);
    await stuck.close();
  }
});

test('cleanupPool deletes the pool\'s node pools, also one a crashed rotation left, and no one else\'s', async () => {
  await store.writePool({ spec: rotated, createdAt: '', updatedAt: '' });
  const leftover = gkeSpec({ nodes: 1, gke: { bootDisk: { sizeGb: 400 } } });
  const ops = await provider.operationsFor(rotated);
  const { createNodePoolRequest } = await import('./requests.js');
  await ops.run(createNodePoolRequest(leftover));
  await ops.run(createNodePoolRequest(gkeSpec({ name: 'cix', nodes: 1 })));
  fake.requests.length = 0;
  await provider.cleanupPool('ci');
  assert.deepEqual(fake.mutations().map((r) => r.httpMethod).sort(), ['DELETE', 'DELETE']);
  assert.deepEqual([...fake.pools.keys()], [gkePoolName(gkeSpec({ name: 'cix', nodes: 1 }))]);
});
