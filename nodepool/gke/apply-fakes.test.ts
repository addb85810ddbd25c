import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeClusterNodes } from '../../kube/cluster-nodes.js';
import { ClusterLink } from '../../test/fakes/gke/cluster-link.js';
import { FAST_POLLS, gkeSpec } from '../../test/fakes/gke/connect.js';
import { FakeGke } from '../../test/fakes/gke/server.js';
import { startFakeKubeApi, type FakeKubeApi } from '../../test/fakes/kube-api/server.js';
import { StateStore } from '../state/store.js';
import { applyGkePool } from './apply.js';
import { connectionFromEnv } from './client.js';
import { GkeProvider } from './provider.js';

// Bad input through the GKE apply, in process (the CLI path minus the process): one line each,
// and nothing half-made left behind, neither a node pool nor a pool record.

let fake: FakeGke;
let kube: FakeKubeApi;
let link: ClusterLink;
let root: string;
let store: StateStore;
let provider: GkeProvider;

before(async () => {
  process.env.METADATA_SERVER_DETECTION = 'none';
  fake = await FakeGke.start({ project: 'build-proj', location: 'us-central1', cluster: 'builds', token: null, pollsToDone: 1 });
  kube = await startFakeKubeApi();
  link = new ClusterLink(fake, kube, { untaintAfterMs: 10 });
  root = await mkdtemp(join(tmpdir(), 'gke-apply-'));
  store = new StateStore(root);
  provider = new GkeProvider(store, {
    connection: connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: `http://127.0.0.1:${fake.port}` }),
    operations: FAST_POLLS,
    clusterNodes: () => new KubeClusterNodes(kube.kubeConfig()),
    registerTimeoutMs: 5_000,
    pollMs: 20,
  });
});
after(async () => {
  link?.close();
  await provider?.close();
  await fake?.close();
  await kube?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

test('a create whose operation fails: one line with GKE\'s reason and that the half-made node pool was deleted; no record left', async () => {
  fake.failNextOperation('RESOURCE_EXHAUSTED', "Quota 'LOCAL_SSD_TOTAL_GB' exceeded. Limit: 375.0 in region us-central1.");
  const err = await applyGkePool(store, provider, gkeSpec({ name: 'quota' }), {}).then(() => undefined, (e: Error) => e);
  assert.ok(err, 'the apply failed');
  assert.doesNotMatch(err.message, /\n/);
  assert.match(err.message, /LOCAL_SSD_TOTAL_GB.*the half-made node pool quota-[0-9a-f]{6} was deleted/);
  assert.equal(fake.pools.size, 0);
  assert.equal(await store.readPool('quota'), undefined);
});

test('an unknown cluster and a project without permission: one line each naming it; no record left', async () => {
  for (const [gke, pattern] of [
    [{ cluster: 'nope' }, /clusters\/nope/],
    [{ project: 'other-proj' }, /other-proj/],
  ] as const) {
    const spec = gkeSpec({ name: 'bad', gke });
    const err = await applyGkePool(store, provider, spec, {}).then(() => undefined, (e: Error) => e);
    assert.ok(err, `the apply with ${JSON.stringify(gke)} failed`);
    assert.doesNotMatch(err.message, /\n/);
    assert.match(err.message, pattern);
    assert.equal(await store.readPool('bad'), undefined);
  }
  assert.equal(fake.pools.size, 0);
});

test('a machine type without local SSDs is refused before any call, also in a dry run', async () => {
  const before = fake.requests.length;
  for (const dryRun of [true, false]) {
    await assert.rejects(applyGkePool(store, provider, gkeSpec({ name: 'e2', gke: { machineType: 'e2-standard-8' } }), { dryRun }), /e2-standard-8 has no local SSDs/);
  }
  assert.equal(fake.requests.length, before);
  assert.equal(await store.readPool('e2'), undefined);
});
