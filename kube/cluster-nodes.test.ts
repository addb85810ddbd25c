import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type V1Node, type V1Pod } from '@kubernetes/client-node';
import { startFakeKubeApi, type FakeKubeApi } from '../test/fakes/kube-api/server.js';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { CORDON_REASON_ANNOTATION, KubeClusterNodes } from './cluster-nodes.js';

let api: FakeKubeApi;
let core: CoreV1Api;
let nodes: KubeClusterNodes;
before(async () => {
  api = await startFakeKubeApi();
  core = api.kubeConfig().makeApiClient(CoreV1Api);
  nodes = new KubeClusterNodes(api.kubeConfig(), { backoff: { initialMs: 20, maxMs: 80 } });
});
after(() => api.close());

const node = (name: string, pool: string, extra: Partial<V1Node> = {}): V1Node => ({ metadata: { name, labels: { 'cloud.google.com/gke-nodepool': pool } }, spec: {}, status: { conditions: [{ type: 'Ready', status: 'True' }] }, ...extra });
const pod = (name: string, nodeName: string, labels: Record<string, string>, ready = true): V1Pod => ({
  metadata: { name, namespace: 'ci', labels },
  spec: { nodeName, containers: [{ name: 'build', image: 'build' }] },
  status: { phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});
const podDeletes = () => api.requests.filter((r) => r.method === 'DELETE' && r.path.includes('/pods/'));

test('listPoolNodes: the pool label picks the nodes; ready, taints, conditions with times, every image name', async () => {
  await core.createNode({
    body: node('gke-a-1', 'pool-a', {
      spec: { taints: [{ key: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull', value: 'true', effect: 'NoSchedule' }] },
      status: {
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastTransitionTime: new Date('2026-12-05T10:00:00Z') }],
        images: [{ names: ['reg.example/ci/build@sha256:aaaa', 'reg.example/ci/build:1'], sizeBytes: 10 }, { names: ['pause:3.9'] }],
      },
    }),
  });
  await core.createNode({ body: node('gke-a-0', 'pool-a', { status: { conditions: [{ type: 'Ready', status: 'False' }] } }) });
  await core.createNode({ body: node('gke-b-0', 'pool-b') });
  const views = await nodes.listPoolNodes('pool-a');
  assert.deepEqual(views.map((v) => [v.name, v.ready]), [['gke-a-0', false], ['gke-a-1', true]]);
  assert.deepEqual(views[1], {
    name: 'gke-a-1',
    ready: true,
    unschedulable: false,
    taints: [{ key: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull', value: 'true', effect: 'NoSchedule' }],
    conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastTransitionTime: '2026-12-05T10:00:00Z' }],
    images: ['reg.example/ci/build@sha256:aaaa', 'reg.example/ci/build:1', 'pause:3.9'],
  });
});

test('cordon records why (annotation, Event); uncordon clears both', async () => {
  await core.createNode({ body: node('c1', 'pool-c') });
  await nodes.cordon('c1', 'RuntimeUnhealthy: docker ps timed out');
  let stored = await core.readNode({ name: 'c1' });
  assert.equal(stored.spec?.unschedulable, true);
  assert.equal(stored.metadata?.annotations?.[CORDON_REASON_ANNOTATION], 'RuntimeUnhealthy: docker ps timed out');
  const events = (await core.listNamespacedEvent({ namespace: 'default' })).items.filter((e) => e.involvedObject.name === 'c1');
  assert.deepEqual(events.map((e) => [e.reason, e.type]), [['Cordoned', 'Warning']]);
  await nodes.uncordon('c1');
  stored = await core.readNode({ name: 'c1' });
  assert.equal(stored.spec?.unschedulable, undefined);
  assert.equal(stored.metadata?.annotations?.[CORDON_REASON_ANNOTATION], undefined);
  assert.equal((await nodes.listPoolNodes('pool-c'))[0]?.unschedulable, false);
});

test('drain evicts every pod but DaemonSet ones, waits out a PodDisruptionBudget, and deletes none', async () => {
  await core.createNode({ body: node('d1', 'pool-d') });
  await core.createNamespacedPod({ namespace: 'ci', body: pod('build-1', 'd1', { app: 'build' }) });
  await core.createNamespacedPod({ namespace: 'ci', body: pod('build-2', 'd1', { app: 'build' }) });
  // On another node, a build finishing up (not Ready): with maxUnavailable 1 the budget has no room until it is done.
  await core.createNamespacedPod({ namespace: 'ci', body: pod('build-3', 'd2', { app: 'build' }, false) });
  await core.createNamespacedPod({ namespace: 'ci', body: { ...pod('agent-x', 'd1', { app: 'agent' }), metadata: { name: 'agent-x', namespace: 'ci', ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'agent', uid: 'u1', controller: true }] } } });
  api.store.create({ group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget', namespaced: true }, 'ci', { metadata: { name: 'build' }, spec: { maxUnavailable: 1, selector: { matchLabels: { app: 'build' } } } });

  const drained = nodes.drain('d1', { deadlineSeconds: 20 });
  const evictions = () => api.requests.filter((r) => r.path.includes('/eviction'));
  while (evictions().length < 4) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(evictions().every((r) => r.status === 429 || r.status === undefined), 'no eviction before the finishing build is done');
  const finishedAt = api.requests.length;
  await core.patchNamespacedPodStatus({ name: 'build-3', namespace: 'ci', body: { status: { phase: 'Succeeded' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  await drained;

  const left = (await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=d1' })).items.map((p) => p.metadata?.name);
  assert.deepEqual(left, ['agent-x']);
  const granted = api.requests.map((r, i) => ({ ...r, i })).filter((r) => r.path.includes('/eviction') && r.status === 201);
  assert.equal(granted.length, 2);
  assert.ok(granted.every((r) => r.i > finishedAt), 'evictions granted only after the other build finished');
  assert.equal(podDeletes().length, 0);
});

test('drain past its deadline fails naming the pods left, and deletes none', async () => {
  await core.createNode({ body: node('e1', 'pool-e') });
  await core.createNamespacedPod({ namespace: 'ci', body: pod('guarded', 'e1', { app: 'guarded' }) });
  api.store.create({ group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget', namespaced: true }, 'ci', { metadata: { name: 'guarded' }, spec: { minAvailable: 1, selector: { matchLabels: { app: 'guarded' } } } });
  const started = Date.now();
  const err = await nodes.drain('e1', { deadlineSeconds: 0.4 }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof BuildfleetError && err.kind === 'conflict', String(err));
  assert.match(err.message, /^drain e1: 0.4 s passed with 1 pod\(s\) left: ci\/guarded \(their PodDisruptionBudget allows no disruption: ci\/guarded\)$/);
  assert.ok(Date.now() - started >= 400);
  assert.equal((await core.readNamespacedPod({ name: 'guarded', namespace: 'ci' })).metadata?.name, 'guarded');
  assert.ok(api.requests.filter((r) => r.path.includes('/pods/guarded/eviction')).length >= 3, 'retried with backoff');
  assert.equal(podDeletes().length, 0);
});

test('API failures are one line of the right kind', async () => {
  api.injectFailure({ path: /^\/api\/v1\/nodes\?/, code: 403, times: 1 });
  await assert.rejects(nodes.listPoolNodes('pool-a'), (e: unknown) => e instanceof BuildfleetError && e.kind === 'auth' && /^list the nodes of pool pool-a: injected failure 403 \(HTTP 403\)$/.test(e.message));
  await assert.rejects(nodes.cordon('nope', 'x'), (e: unknown) => e instanceof BuildfleetError && e.kind === 'not-found' && /^cordon node nope: nodes "nope" not found \(HTTP 404\)$/.test(e.message));
});
