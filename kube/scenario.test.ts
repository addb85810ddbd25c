import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AppsV1Api, CoreV1Api, PatchStrategy, PolicyV1Api, setHeaderOptions, type V1DaemonSet, type V1Node, type V1Pod, type V1Toleration } from '@kubernetes/client-node';
import { startFakeKubeApi, type FakeKubeApi } from '../test/fakes/kube-api/server.js';
import { waitFor } from '../test/helpers/wait.js';
import { KubeClusterNodes } from './cluster-nodes.js';
import { DEFAULT_STARTUP_TAINT, kubeManifests, POOL_LABEL } from './manifests.js';
import { NodeConditionWriter } from './node-conditions.js';
import { NodeInformer } from './node-informer.js';
import { drainThenRestart } from './remediation.js';
import { StartupTaintRemover, type TaintResult } from './startup-taint.js';

/**
 * A node's life on the fake API server, with the test playing the parts no code of ours plays
 * (kubelet, scheduler, DaemonSet controller, builds finishing) and our code playing the agent.
 */

const NODE = 'gke-ci-pool-1';
const DIGEST = 'sha256:' + 'd'.repeat(64);
const BUILD_IMAGE = `reg.example/ci/build@${DIGEST}`;
const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

let api: FakeKubeApi;
let core: CoreV1Api;
before(async () => {
  api = await startFakeKubeApi();
  core = api.kubeConfig().makeApiClient(CoreV1Api);
});
after(() => api.close());

/** The scheduler's taint check: every NoSchedule taint tolerated. */
function tolerates(tolerations: V1Toleration[] | undefined, node: V1Node): boolean {
  return (node.spec?.taints ?? []).filter((t) => t.effect === 'NoSchedule').every((taint) =>
    (tolerations ?? []).some((t) => (t.operator === 'Exists' && (t.key === undefined || t.key === taint.key)) || (t.key === taint.key && t.value === taint.value)),
  );
}

/** The DaemonSet controller and kubelet: a Running pod of the DaemonSet on the node. */
async function runDaemonPod(ds: V1DaemonSet, node: V1Node): Promise<void> {
  const template = ds.spec!.template;
  assert.ok(tolerates(template.spec?.tolerations, node), `${ds.metadata?.name} tolerates the node's taints`);
  const name = `${ds.metadata!.name}-${node.metadata!.name}`;
  const namespace = ds.metadata!.namespace!;
  await core.createNamespacedPod({
    namespace,
    body: { metadata: { name, namespace, labels: template.metadata?.labels, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: ds.metadata!.name!, uid: ds.metadata!.uid!, controller: true }] }, spec: { ...template.spec!, nodeName: node.metadata!.name! } },
  });
  await core.patchNamespacedPodStatus({ name, namespace, body: { status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] } } }, merge);
}

const buildPod = (name: string, nodeName: string, ready = true): V1Pod => ({
  metadata: { name, namespace: 'ci', labels: { app: 'build' } },
  spec: { nodeName, containers: [{ name: 'build', image: BUILD_IMAGE }] },
  status: { phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});

test('startup taint off once the pre-pulled digest is on the node; runtime hang: condition, cordon, drain within the budget, restart, uncordon', { timeout: 20_000 }, async () => {
  const apps = api.kubeConfig().makeApiClient(AppsV1Api);
  // kubectl apply of the generated manifests (the DaemonSets are what this fake serves).
  const manifests = kubeManifests({ pool: 'ci', namespace: 'buildfleet', buildImage: BUILD_IMAGE, agentImage: 'reg.example/agent:1', startupTaintKey: DEFAULT_STARTUP_TAINT, runtimeSocket: '/run/containerd/containerd.sock', runtimeDataDir: '/var/lib/containerd', workloadDevice: '/dev/nvme0n1' });
  const daemonSets: V1DaemonSet[] = [];
  for (const object of manifests.filter((o) => o.kind === 'DaemonSet')) daemonSets.push(await apps.createNamespacedDaemonSet({ namespace: 'buildfleet', body: object as V1DaemonSet }));

  // 1. The node registers with the startup taint (GKE's node pool puts it there).
  let node = await core.createNode({
    body: { metadata: { name: NODE, labels: { [POOL_LABEL]: 'ci', 'cloud.google.com/gke-nodepool': 'ci-abc123' } }, spec: { taints: [{ key: DEFAULT_STARTUP_TAINT, value: 'true', effect: 'NoSchedule' }] } },
  });
  await core.patchNodeStatus({ name: NODE, body: { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }], images: [{ names: ['pause:3.9'] }] } } }, merge);
  assert.equal(tolerates(buildPod('x', NODE).spec?.tolerations, node), false, 'builds are kept off');

  // The agent: its own node through an informer; every update re-checks the taint.
  const remover = new StartupTaintRemover(api.kubeConfig(), { nodeName: NODE, taintKey: DEFAULT_STARTUP_TAINT, digest: DIGEST });
  const checks: TaintResult[] = [];
  let checking: Promise<unknown> = Promise.resolve();
  const informer = new NodeInformer(api.kubeConfig(), {
    fieldSelector: `metadata.name=${NODE}`,
    onNode: (seen) => (checking = checking.then(async () => checks.push(await remover.check(true, seen)))),
  });
  await informer.start();
  try {
    // 2. Both DaemonSets' pods run on it (they tolerate the taint); 3. kubelet reports the image.
    for (const ds of daemonSets) await runDaemonPod(ds, node);
    await waitFor('a check while the image is missing', 3000, async () => checks.some((c) => !c.removed));
    assert.ok((await core.readNode({ name: NODE })).spec?.taints?.length === 1, 'taint kept until the image is there');
    await core.patchNodeStatus({ name: NODE, body: { status: { images: [{ names: [BUILD_IMAGE, 'reg.example/ci/build:2026-12'] }, { names: ['pause:3.9'] }] } } }, merge);
    // 4. The taint goes.
    await waitFor('the taint removed', 3000, async () => checks.some((c) => c.removed));
    node = await core.readNode({ name: NODE });
    assert.deepEqual(node.spec?.taints ?? [], []);
    assert.ok(tolerates(buildPod('x', NODE).spec?.tolerations, node), 'builds may come');
  } finally {
    await informer.stop();
  }

  // Builds on the node, and one on another node finishing up; the budget allows one unavailable.
  await core.createNamespacedPod({ namespace: 'ci', body: buildPod('build-1', NODE) });
  await core.createNamespacedPod({ namespace: 'ci', body: buildPod('build-2', NODE) });
  await core.createNamespacedPod({ namespace: 'ci', body: buildPod('build-3', 'gke-ci-pool-2', false) });
  await api.kubeConfig().makeApiClient(PolicyV1Api).createNamespacedPodDisruptionBudget({ namespace: 'ci', body: { metadata: { name: 'build' }, spec: { maxUnavailable: 1, selector: { matchLabels: { app: 'build' } } } } });

  // 5. The runtime hangs: the agent's probe problem becomes a condition.
  const conditions = new NodeConditionWriter(api.kubeConfig(), NODE);
  const hung = { type: 'RuntimeUnhealthy', present: true, reason: 'ProbeTimeout', message: 'crictl pods took over 10 s, 3 times' };
  await conditions.report([hung]);
  const condition = (await core.readNode({ name: NODE })).status?.conditions?.find((c) => c.type === 'RuntimeUnhealthy');
  assert.equal(condition?.status, 'True');

  // 6. Remediation: cordon, drain (the budget holds one eviction until build-3 finishes), restart, uncordon.
  const nodes = new KubeClusterNodes(api.kubeConfig(), { backoff: { initialMs: 20, maxMs: 100 } });
  let restartedAt = -1;
  let finishedAt = -1;
  const evictions = () => api.requests.filter((r) => r.path.includes('/eviction'));
  const finisher = (async () => {
    await waitFor('the budget refusing', 5000, async () => evictions().some((r) => r.status === 429));
    assert.equal((await core.readNode({ name: NODE })).spec?.unschedulable, true, 'cordoned before the drain');
    finishedAt = api.requests.length;
    await core.patchNamespacedPodStatus({ name: 'build-3', namespace: 'ci', body: { status: { phase: 'Succeeded' } } }, merge);
  })();
  const steps = await drainThenRestart(nodes, {
    node: NODE,
    reason: `RuntimeUnhealthy: ${hung.message}`,
    deadlineSeconds: 10,
    restartRuntime: async () => {
      restartedAt = api.requests.length;
    },
    runtimeHealthy: async () => true,
  });
  await finisher;
  await conditions.report([{ ...hung, present: false, reason: 'ProbeOk', message: 'crictl pods answered in 40 ms' }]);

  assert.deepEqual(steps, ['cordoned', 'drained', 'restarted', 'uncordoned']);
  const granted = api.requests.map((r, i) => ({ ...r, i })).filter((r) => r.path.includes('/eviction') && r.status === 201);
  assert.equal(granted.length, 2, 'both builds evicted');
  assert.ok(granted.every((r) => r.i > finishedAt && r.i < restartedAt), 'evicted after the other build finished, before the restart');
  assert.equal(api.requests.filter((r) => r.method === 'DELETE').length, 0, 'no pod deleted outright');
  const left = (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${NODE}` })).items.map((p) => p.metadata?.name).sort();
  assert.deepEqual(left, [`buildfleet-agent-ci-${NODE}`, `buildfleet-prepull-ci-${NODE}`], 'the DaemonSet pods stay');
  node = await core.readNode({ name: NODE });
  assert.notEqual(node.spec?.unschedulable, true);
  assert.deepEqual(node.status?.conditions?.map((c) => `${c.type}=${c.status}`), ['Ready=True', 'RuntimeUnhealthy=False']);
  const events = (await core.listNamespacedEvent({ namespace: 'default' })).items.filter((e) => e.involvedObject.name === NODE);
  events.sort((a, b) => Number(a.metadata?.resourceVersion) - Number(b.metadata?.resourceVersion));
  assert.deepEqual(events.map((e) => e.reason), ['StartupTaintRemoved', 'ProbeTimeout', 'Cordoned', 'Uncordoned', 'ProbeOk']);
});
