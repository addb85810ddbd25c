import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AppsV1Api, CoreV1Api, makeInformer, PatchStrategy, PolicyV1Api, setHeaderOptions, Watch, type V1Node, type V1Pod } from '@kubernetes/client-node';
import { waitFor } from '../../helpers/wait.js';
import { startFakeKubeApi, type FakeKubeApi } from './server.js';

/** The fake against the real client library: what the client sends, the fake must answer as a real server would. */

let api: FakeKubeApi;
let core: CoreV1Api;
before(async () => {
  api = await startFakeKubeApi({ historyLimit: 50 });
  core = api.kubeConfig().makeApiClient(CoreV1Api);
});
after(() => api.close());

const node = (name: string, pool: string): V1Node => ({ metadata: { name, labels: { 'cloud.google.com/gke-nodepool': pool } }, spec: {}, status: { conditions: [{ type: 'Ready', status: 'True' }] } });
const pod = (name: string, nodeName: string, labels: Record<string, string> = {}): V1Pod => ({
  metadata: { name, namespace: 'ci', labels },
  spec: { nodeName, containers: [{ name: 'c', image: 'busybox' }] },
  status: { phase: 'Running' },
});
const codeOf = async (promise: Promise<unknown>) => promise.then(() => 200, (err: { code?: number }) => err.code);

test('create, get, list by label and field selector, delete; 404 and 409 as Status', async () => {
  await core.createNode({ body: node('a1', 'a') });
  await core.createNode({ body: node('b1', 'b') });
  assert.equal(await codeOf(core.createNode({ body: node('a1', 'a') })), 409);
  const listed = await core.listNode({ labelSelector: 'cloud.google.com/gke-nodepool=a' });
  assert.deepEqual(listed.items.map((n) => n.metadata?.name), ['a1']);
  assert.deepEqual((await core.listNode({ labelSelector: 'cloud.google.com/gke-nodepool in (a,b),!missing' })).items.length, 2);
  await core.createNamespacedPod({ namespace: 'ci', body: pod('p1', 'a1') });
  await core.createNamespacedPod({ namespace: 'ci', body: pod('p2', 'b1') });
  const onA1 = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=a1' });
  assert.deepEqual(onA1.items.map((p) => p.metadata?.name), ['p1']);
  assert.equal((await core.readNamespacedPod({ name: 'p2', namespace: 'ci' })).spec?.nodeName, 'b1');
  await core.deleteNamespacedPod({ name: 'p2', namespace: 'ci' });
  assert.equal(await codeOf(core.readNamespacedPod({ name: 'p2', namespace: 'ci' })), 404);
  const apps = api.kubeConfig().makeApiClient(AppsV1Api);
  await apps.createNamespacedDaemonSet({ namespace: 'ci', body: { metadata: { name: 'ds' }, spec: { selector: { matchLabels: { a: 'b' } }, template: { metadata: { labels: { a: 'b' } }, spec: { containers: [{ name: 'c', image: 'i' }] } } } } });
  assert.equal((await apps.readNamespacedDaemonSet({ name: 'ds', namespace: 'ci' })).kind, 'DaemonSet');
  await core.createNamespacedEvent({ namespace: 'default', body: { metadata: { name: 'e1' }, involvedObject: { kind: 'Node', name: 'a1' }, reason: 'Test', message: 'm' } });
  assert.equal((await core.listNamespacedEvent({ namespace: 'default' })).items[0]?.reason, 'Test');
});

test('JSON, merge and strategic merge patches; status only through /status', async () => {
  await core.createNode({ body: { ...node('p1', 'p'), spec: { taints: [{ key: 'x', effect: 'NoSchedule' }] } } });
  await core.patchNode({ name: 'p1', body: [{ op: 'add', path: '/metadata/labels/j', value: 'json' }] }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
  await core.patchNode({ name: 'p1', body: { metadata: { labels: { m: 'merge' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  await core.patchNode({ name: 'p1', body: { spec: { unschedulable: true } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
  // Status written through the main resource is ignored; through /status it lands, conditions merged by type.
  await core.patchNode({ name: 'p1', body: { status: { conditions: [{ type: 'Ignored', status: 'True' }] } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
  const patched = await core.patchNodeStatus({ name: 'p1', body: { status: { conditions: [{ type: 'RuntimeUnhealthy', status: 'True', reason: 'ProbeTimeout' }] } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
  assert.deepEqual(patched.metadata?.labels, { 'cloud.google.com/gke-nodepool': 'p', j: 'json', m: 'merge' });
  assert.equal(patched.spec?.unschedulable, true);
  assert.deepEqual(patched.status?.conditions?.map((c) => `${c.type}=${c.status}`), ['Ready=True', 'RuntimeUnhealthy=True']);
  // A JSON patch whose test fails is refused whole (422).
  const refused = core.patchNode({ name: 'p1', body: [{ op: 'test', path: '/spec/taints/0/key', value: 'other' }, { op: 'remove', path: '/spec/taints/0' }] }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
  assert.equal(await codeOf(refused), 422);
  assert.equal((await core.readNode({ name: 'p1' })).spec?.taints?.length, 1);
});

test('watch from a resourceVersion replays later changes, one JSON event a line', async () => {
  const start = (await core.listNode({})).metadata?.resourceVersion ?? '';
  await core.createNode({ body: node('w1', 'w') });
  await core.patchNode({ name: 'w1', body: { metadata: { labels: { seen: 'yes' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  const events: string[] = [];
  const controller = await new Watch(api.kubeConfig()).watch('/api/v1/nodes', { resourceVersion: start, labelSelector: 'cloud.google.com/gke-nodepool=w' }, (type, object: V1Node) => events.push(`${type} ${object.metadata?.name}`), () => {});
  await core.deleteNode({ name: 'w1' });
  await waitFor('three events', 3000, async () => events.length >= 3);
  controller.abort();
  assert.deepEqual(events, ['ADDED w1', 'MODIFIED w1', 'DELETED w1']);
});

test('a too-old resourceVersion gets a 410 Expired event, and the informer relists', async () => {
  const informer = makeInformer(api.kubeConfig(), '/api/v1/nodes', () => core.listNode({ labelSelector: 'cloud.google.com/gke-nodepool=i' }), 'cloud.google.com/gke-nodepool=i');
  const added: string[] = [];
  informer.on('add', (n: V1Node) => added.push(n.metadata?.name ?? ''));
  await core.createNode({ body: node('i1', 'i') });
  await informer.start();
  await waitFor('the first list', 3000, async () => added.includes('i1'));
  const listsBefore = api.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/api/v1/nodes?labelSelector')).length;
  // While the watch is down, a node comes and the history is compacted: the rewatch gets 410.
  api.store.compact();
  api.dropWatches();
  await core.createNode({ body: node('i2', 'i') });
  api.store.compact();
  await waitFor('the relisted node', 5000, async () => informer.get('i2') !== undefined);
  await informer.stop();
  const lists = api.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/api/v1/nodes?labelSelector')).length;
  assert.ok(lists > listsBefore, 'the informer listed again');
  const raw = await fetch(`${api.url}/api/v1/nodes?watch=true&resourceVersion=1`);
  assert.equal(raw.status, 200);
  assert.deepEqual(JSON.parse((await raw.text()).trim()), { type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: 1 (${api.store.resourceVersion})`, reason: 'Expired', code: 410 } });
});

test('eviction honours the PodDisruptionBudget: 429 while it allows no disruption', async () => {
  const policy = api.kubeConfig().makeApiClient(PolicyV1Api);
  await policy.createNamespacedPodDisruptionBudget({ namespace: 'ci', body: { metadata: { name: 'build' }, spec: { minAvailable: 1, selector: { matchLabels: { app: 'build' } } } } });
  await core.createNamespacedPod({ namespace: 'ci', body: pod('e1', 'x', { app: 'build' }) });
  await core.createNamespacedPod({ namespace: 'ci', body: pod('e2', 'x', { app: 'build' }) });
  const evict = (name: string) => core.createNamespacedPodEviction({ name, namespace: 'ci', body: { metadata: { name, namespace: 'ci' } } });
  await evict('e1');
  assert.equal(await codeOf(core.readNamespacedPod({ name: 'e1', namespace: 'ci' })), 404);
  const blocked = await evict('e2').then(() => undefined, (err: { code: number; body: string }) => err);
  assert.equal(blocked?.code, 429);
  assert.match(String(blocked?.body), /disruption budget build needs 1 healthy pods and has 1 currently/);
  // A finished pod is evicted whatever its budget says.
  await core.patchNamespacedPodStatus({ name: 'e2', namespace: 'ci', body: { status: { phase: 'Succeeded' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  await evict('e2');
  assert.equal(await codeOf(evict('e2')), 404);
});
