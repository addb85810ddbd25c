import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeClusterNodes } from '../../../kube/cluster-nodes.js';
import { createNodePoolRequest, deleteNodePoolRequest, gkePoolName, setNodePoolSizeRequest } from '../../../nodepool/gke/requests.js';
import { waitFor } from '../../helpers/wait.js';
import { startFakeKubeApi, type FakeKubeApi } from '../kube-api/server.js';
import { ClusterLink } from './cluster-link.js';
import { gkeSpec, startFakeGke, type FakeGkeSetup } from './connect.js';

// The fake GKE's finished operations register Node objects in the fake Kubernetes API; read
// back through the real Kubernetes client, as the provider reads them.

const spec = gkeSpec({ nodes: 2 });
const gke = spec.gke!;
const pool = gkePoolName(spec);
let setup: FakeGkeSetup;
let kube: FakeKubeApi;
let link: ClusterLink;
let nodes: KubeClusterNodes;

before(async () => {
  setup = await startFakeGke(spec, { pollsToDone: 1 });
  kube = await startFakeKubeApi();
  link = new ClusterLink(setup.fake, kube);
  nodes = new KubeClusterNodes(kube.kubeConfig(), { backoff: { initialMs: 10, maxMs: 20 } });
});
after(async () => {
  link?.close();
  await setup?.stop();
  await kube?.close();
});

test('a created pool registers its nodes: pool label, its labels, the startup taint, Ready, no images; nothing serves until the taint goes', async () => {
  await setup.operations.run(createNodePoolRequest(spec));
  const views = await nodes.listPoolNodes(pool);
  assert.deepEqual(views.map((v) => v.name), [`gke-builds-${pool}-0001`, `gke-builds-${pool}-0002`]);
  for (const view of views) {
    assert.equal(view.ready, true);
    assert.equal(view.unschedulable, false);
    assert.deepEqual(view.taints, [{ key: gke.startupTaint.key, value: gke.startupTaint.value, effect: 'NoSchedule' }]);
    assert.deepEqual(view.images, []);
    assert.deepEqual(view.conditions.map((c) => [c.type, c.status, c.reason]), [['Ready', 'True', 'KubeletReady']]);
  }
  assert.equal(link.nodes(pool)[0]!.metadata.labels?.['buildfleet.io/pool'], 'ci');
  assert.equal(link.lowestServing('ci'), 0);
  link.untaintAll();
  assert.deepEqual((await nodes.listPoolNodes(pool)).map((v) => v.taints), [[], []]);
  assert.equal(link.samples.at(-1)!.serving, 2);
});

test('a resize registers or removes nodes (cordoned first); a delete removes them all; a failed operation registers nothing', async () => {
  await setup.operations.run(setNodePoolSizeRequest(gke, pool, 3));
  assert.equal((await nodes.listPoolNodes(pool)).length, 3);
  await nodes.cordon(`gke-builds-${pool}-0001`, 'test');
  await setup.operations.run(setNodePoolSizeRequest(gke, pool, 2));
  assert.deepEqual((await nodes.listPoolNodes(pool)).map((v) => v.name), [`gke-builds-${pool}-0002`, `gke-builds-${pool}-0003`]);
  setup.fake.failNextOperation('RESOURCE_EXHAUSTED', 'Quota exceeded');
  await assert.rejects(setup.operations.run(setNodePoolSizeRequest(gke, pool, 5)), /Quota/);
  assert.equal((await nodes.listPoolNodes(pool)).length, 2);
  await setup.operations.run(deleteNodePoolRequest(gke, pool));
  assert.deepEqual(await nodes.listPoolNodes(pool), []);
});

test('playing the agent: the startup taint goes untaintAfterMs after registration', async () => {
  link.untaintAfterMs = 30;
  const other = gkeSpec({ name: 'other', nodes: 1 });
  await setup.operations.run(createNodePoolRequest(other));
  await waitFor('the taint to go', 5_000, async () => (await nodes.listPoolNodes(gkePoolName(other)))[0]!.taints.length === 0);
  // Registered tainted (not serving), then untainted (serving).
  assert.deepEqual(link.samples.filter((s) => s.pool === 'other').map((s) => s.serving), [0, 1]);
});
