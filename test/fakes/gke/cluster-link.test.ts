import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeClusterNodes } from '../../../kube/cluster-nodes.js';
import { createNodePoolRequest, deleteNodePoolRequest, gkePoolName, setNodePoolSizeRequest, updateNodePoolRequest } from '../../../nodepool/gke/requests.js';
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

test('an in-place update replaces the labels and taints the pool gave its nodes; a startup taint the agent removed stays removed', async () => {
  const first = gkeSpec({ name: 'upd', nodes: 2, gke: { labels: { team: 'ci', tier: 'a' } } });
  const name = gkePoolName(first);
  await setup.operations.run(createNodePoolRequest(first));
  const [one, two] = link.nodes(name).map((node) => node.metadata.name);
  link.untaintAll();
  await nodes.cordon(one!, 'test');
  const extra = { key: 'dedicated', value: 'builds', effect: 'NO_EXECUTE' };
  const relabelled = gkeSpec({ name: 'upd', nodes: 2, gke: { labels: { team: 'web' } } });
  const request = updateNodePoolRequest(relabelled, name, ['labels', 'taints']);
  (request.request as { taints: { taints: object[] } }).taints.taints.push(extra);
  await setup.operations.run(request);
  for (const node of link.nodes(name)) {
    const { 'kubernetes.io/hostname': _, ...labels } = node.metadata.labels!;
    assert.deepEqual(labels, { team: 'web', 'buildfleet.io/pool': 'upd', 'cloud.google.com/gke-nodepool': name });
  }
  const views = await nodes.listPoolNodes(name);
  assert.deepEqual(views.map((v) => [v.name, v.unschedulable, v.taints]), [
    [one, true, [{ key: 'dedicated', value: 'builds', effect: 'NoExecute' }]],
    [two, false, [{ key: 'dedicated', value: 'builds', effect: 'NoExecute' }]],
  ]);
  await setup.operations.run(deleteNodePoolRequest(gke, name));
});

test('playing the agent: the startup taint goes untaintAfterMs after registration', async () => {
  link.untaintAfterMs = 30;
  const other = gkeSpec({ name: 'other', nodes: 1 });
  await setup.operations.run(createNodePoolRequest(other));
  await waitFor('the taint to go', 5_000, async () => (await nodes.listPoolNodes(gkePoolName(other)))[0]!.taints.length === 0);
  // Registered tainted (not serving), then untainted (serving).
  assert.deepEqual(link.samples.filter((s) => s.pool === 'other').map((s) => s.serving), [0, 1]);
});
