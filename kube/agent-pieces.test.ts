import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type V1Node } from '@kubernetes/client-node';
import { startFakeKubeApi, type FakeKubeApi } from '../test/fakes/kube-api/server.js';
import { waitFor } from '../test/helpers/wait.js';
import { conditionsFor, NodeConditionWriter } from './node-conditions.js';
import { NodeInformer } from './node-informer.js';
import { decideStartupTaint, StartupTaintRemover } from './startup-taint.js';

const TAINT = 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull';
const DIGEST = 'sha256:' + 'c'.repeat(64);
const OTHER = { key: 'team', value: 'ci', effect: 'NoSchedule' };
const startup = { key: TAINT, value: 'true', effect: 'NoSchedule' };

let api: FakeKubeApi;
let core: CoreV1Api;
before(async () => {
  api = await startFakeKubeApi({ historyLimit: 100 });
  core = api.kubeConfig().makeApiClient(CoreV1Api);
});
after(() => api.close());

const withImages = (names: string[]) => ({ status: { images: [{ names }] } });

test('decideStartupTaint: waits for the digest and a healthy runtime; nothing to do without the taint', () => {
  const node: V1Node = { metadata: { name: 'n' }, spec: { taints: [OTHER, startup] } };
  const settings = { taintKey: TAINT, digest: DIGEST, runtimeHealthy: true };
  assert.equal(decideStartupTaint(node, settings).action, 'wait');
  assert.equal(decideStartupTaint({ ...node, ...withImages(['reg/ci/build:1']) }, settings).action, 'wait', 'a tag is not the digest');
  assert.equal(decideStartupTaint({ ...node, ...withImages([`reg/ci/build@${DIGEST}`]) }, { ...settings, runtimeHealthy: false }).action, 'wait');
  assert.deepEqual(decideStartupTaint({ ...node, ...withImages([`reg/ci/build@${DIGEST}`]) }, settings), { action: 'remove', index: 1, taint: startup });
  assert.equal(decideStartupTaint({ metadata: { name: 'n' }, spec: { taints: [OTHER] } }, settings).action, 'none');
});

test('the remover takes off only its own taint, once, even when the taints changed since it read them', async () => {
  await core.createNode({ body: { metadata: { name: 't1' }, spec: { taints: [startup, OTHER] } } });
  const remover = new StartupTaintRemover(api.kubeConfig(), { nodeName: 't1', taintKey: TAINT, digest: DIGEST });
  assert.deepEqual(await remover.check(true), { removed: false, why: `${DIGEST} is not in node.status.images yet` });
  await core.patchNodeStatus({ name: 't1', body: withImages([`reg/ci/build@${DIGEST}`, 'reg/ci/build:1']) }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  const stale = await core.readNode({ name: 't1' });
  // Someone else puts a taint in front of ours after the agent read the node: index 0 is no longer ours.
  await core.patchNode({ name: 't1', body: [{ op: 'add', path: '/spec/taints/0', value: { key: 'late', effect: 'NoSchedule' } }] }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
  assert.deepEqual(await remover.check(true, stale), { removed: true, why: 'image present and runtime healthy' });
  assert.deepEqual(JSON.parse(JSON.stringify((await core.readNode({ name: 't1' })).spec?.taints)), [{ key: 'late', effect: 'NoSchedule' }, OTHER]);
  assert.equal((await remover.check(true)).removed, false, 'idempotent');
  const patches = api.requests.filter((r) => r.method === 'PATCH' && r.path.startsWith('/api/v1/nodes/t1') && r.contentType?.startsWith('application/json-patch+json'));
  assert.deepEqual(patches.map((r) => r.status), [200, 422, 200], 'the late taint, the refused stale patch, the removal');
  const events = (await core.listNamespacedEvent({ namespace: 'default' })).items.filter((e) => e.involvedObject.name === 't1');
  assert.deepEqual(events.map((e) => e.reason), ['StartupTaintRemoved']);
});

test('conditionsFor: the transition time moves only when the status does; the heartbeat always', () => {
  const t0 = new Date('2026-12-05T10:00:00Z');
  const t1 = new Date('2026-12-05T10:00:10Z');
  const problem = { type: 'RuntimeUnhealthy', present: true, reason: 'ProbeTimeout', message: 'docker ps took over 10 s' };
  const first = conditionsFor([{ type: 'Ready', status: 'True' }], [problem], t0);
  assert.deepEqual(first.changes.map((c) => `${c.type}:${c.from}->${c.to}`), ['RuntimeUnhealthy:undefined->True']);
  const again = conditionsFor(first.conditions, [{ ...problem, message: 'still' }], t1);
  assert.deepEqual([again.conditions[0]?.lastTransitionTime, again.conditions[0]?.lastHeartbeatTime, again.changes.length], [t0, t1, 0]);
  const cleared = conditionsFor(again.conditions, [{ ...problem, present: false, reason: 'ProbeOk' }], t1);
  assert.deepEqual([cleared.conditions[0]?.status, cleared.conditions[0]?.lastTransitionTime, cleared.changes[0]?.to], ['False', t1, 'False']);
  assert.equal(conditionsFor(undefined, [{ ...problem, present: false }], t0).changes.length, 0, 'absent from the start: no news');
});

test('the condition writer patches nodes/status, keeps kubelet\'s conditions, and records an Event per change', async () => {
  await core.createNode({ body: { metadata: { name: 'c1' }, status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }] } } });
  let clock = new Date('2026-12-05T10:00:00Z');
  const writer = new NodeConditionWriter(api.kubeConfig(), 'c1', () => clock);
  const disk = { type: 'WorkloadDiskSaturated', present: false, reason: 'DiskOk', message: 'utilization 0.10' };
  await writer.report([{ type: 'RuntimeUnhealthy', present: true, reason: 'ProbeTimeout', message: 'docker ps took over 10 s' }, disk]);
  clock = new Date('2026-12-05T10:00:30Z');
  await writer.report([{ type: 'RuntimeUnhealthy', present: true, reason: 'ProbeTimeout', message: 'again' }, disk]);
  const conditions = (await core.readNode({ name: 'c1' })).status?.conditions ?? [];
  const runtime = conditions.find((c) => c.type === 'RuntimeUnhealthy');
  assert.deepEqual(conditions.map((c) => `${c.type}=${c.status}`), ['Ready=True', 'RuntimeUnhealthy=True', 'WorkloadDiskSaturated=False']);
  assert.deepEqual([runtime?.reason, runtime?.message, runtime?.lastTransitionTime?.toISOString(), runtime?.lastHeartbeatTime?.toISOString()], ['ProbeTimeout', 'again', '2026-12-05T10:00:00.000Z', '2026-12-05T10:00:30.000Z']);
  assert.ok(api.requests.filter((r) => r.method === 'PATCH' && r.path.startsWith('/api/v1/nodes/c1')).every((r) => r.path.startsWith('/api/v1/nodes/c1/status')));
  const events = (await core.listNamespacedEvent({ namespace: 'default' })).items.filter((e) => e.involvedObject.name === 'c1');
  assert.deepEqual(events.map((e) => [e.type, e.reason]), [['Warning', 'ProbeTimeout']]);
});

test('the node informer relists after 410 Gone and restarts with backoff after an error', async () => {
  const seen = new Map<string, string | undefined>();
  const errors: number[] = [];
  const informer = new NodeInformer(api.kubeConfig(), {
    labelSelector: 'buildfleet.io/pool=inf',
    backoff: { initialMs: 30, maxMs: 200 },
    onNode: (node) => seen.set(node.metadata?.name ?? '', node.metadata?.labels?.state),
    onError: (_err, retryInMs) => errors.push(retryInMs),
  });
  const pooled = (name: string, state: string): V1Node => ({ metadata: { name, labels: { 'buildfleet.io/pool': 'inf', state } } });
  await core.createNode({ body: pooled('i1', 'a') });
  await core.createNode({ body: { metadata: { name: 'elsewhere' } } });
  try {
    await informer.start();
    await waitFor('i1', 3000, async () => seen.has('i1'));
    await core.patchNode({ name: 'i1', body: { metadata: { labels: { state: 'b' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    await waitFor('the watch update', 3000, async () => seen.get('i1') === 'b');
    // The stream breaks; meanwhile a node joins and the history is compacted: the rewatch gets 410, the informer relists.
    api.store.compact();
    api.dropWatches();
    await core.createNode({ body: pooled('i2', 'a') });
    api.store.compact();
    await waitFor('i2 after a relist', 5000, async () => seen.has('i2'));
    // Now the list itself fails twice: the informer gives up on its own, ours restarts it with growing waits.
    api.injectFailure({ method: 'GET', path: /^\/api\/v1\/nodes\?labelSelector=buildfleet.io%2Fpool%3Dinf$/, code: 500, times: 2 });
    api.store.compact();
    api.dropWatches();
    await core.createNode({ body: pooled('i3', 'a') });
    api.store.compact();
    await waitFor('i3 after the restarts', 5000, async () => seen.has('i3'));
    assert.deepEqual(errors, [30, 60]);
    assert.equal(informer.restarts, 2);
    assert.deepEqual(informer.list().map((n) => n.metadata?.name).sort(), ['i1', 'i2', 'i3']);
  } finally {
    await informer.stop();
  }
});
