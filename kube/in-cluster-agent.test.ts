import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CoreV1Api, PatchStrategy, PolicyV1Api, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { startFakeKubeApi, type FakeKubeApi } from '../test/fakes/kube-api/server.js';
import { testCliCommand, ensureMachineSetup, repoRoot, tempDir } from '../test/helpers/real.js';
import { waitFor } from '../test/helpers/wait.js';
import { DockerEngine } from '../nodepool/daemons/index.js';
import { DEFAULT_STARTUP_TAINT } from './manifests.js';

/**
 * The real agent (`buildfleet agent run --in-cluster`, a child process of the CLI) against the
 * fake Kubernetes API and a real dockerd. The test plays kubelet (node status, pods), the build
 * workload, and systemd (it starts dockerd again once the agent's restart command killed it).
 */

const NODE = 'gke-ci-pool-7';
const DIGEST = 'sha256:' + 'e'.repeat(64);
const BUILD_IMAGE = `reg.example/ci/build@${DIGEST}`;
const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

let api: FakeKubeApi;
let core: CoreV1Api;
let engine: DockerEngine | undefined;
let dir: { path: string; remove(): Promise<void> };
let agent: ChildProcess | undefined;
let agentLog = '';

before(async () => {
  await ensureMachineSetup();
  dir = await tempDir('kube-agent-');
  api = await startFakeKubeApi();
  core = api.kubeConfig().makeApiClient(CoreV1Api);
  engine = await DockerEngine.start({ root: join(dir.path, 'engine'), liveRestore: true });
});

after(async () => {
  if (agent && agent.exitCode === null) {
    agent.kill('SIGTERM');
    const exited = await Promise.race([new Promise((resolve) => agent!.once('exit', () => resolve(true))), new Promise((resolve) => setTimeout(() => resolve(false), 5000))]);
    if (!exited) agent.kill('SIGKILL');
  }
  await engine?.stop();
  await api?.close();
  await dir?.remove();
});

const buildPod = (name: string, nodeName: string, ready = true): V1Pod => ({
  metadata: { name, namespace: 'ci', labels: { app: 'build' } },
  spec: { nodeName, containers: [{ name: 'build', image: BUILD_IMAGE }] },
  status: { phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});

const condition = async () => (await core.readNode({ name: NODE })).status?.conditions?.find((c) => c.type === 'RuntimeUnhealthy');

test('the agent in a cluster: startup taint off once the image is in node status; a hung dockerd: condition, cordon, evictions within the budget, restart, uncordon, condition cleared', { timeout: 120_000 }, async () => {
  const docker = engine!;
  await core.createNode({ body: { metadata: { name: NODE, labels: { 'buildfleet.io/pool': 'ci' } }, spec: { taints: [{ key: DEFAULT_STARTUP_TAINT, value: 'true', effect: 'NoSchedule' }] } } });
  await core.patchNodeStatus({ name: NODE, body: { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }], images: [{ names: ['pause:3.9'] }] } } }, merge);
  const kubeconfig = join(dir.path, 'kubeconfig');
  await writeFile(kubeconfig, api.kubeConfig().exportConfig());
  const workload = await tempDir('kube-agent-workload-');

  agent = spawn(
    process.execPath,
    [
      ...testCliCommand(),
      'agent', 'run', '--in-cluster',
      '--runtime', 'docker', '--runtime-socket', docker.socketPath,
      '--probe-interval', '0.5', '--probe-timeout', '1', '--failure-threshold', '2', '--drain-deadline', '30',
      '--restart-command', `kill -KILL $(cat ${join(docker.root, 'docker.pid')})`,
      '--diskstats', '/proc/diskstats', '--runtime-disk', docker.dataRoot, '--workload-disk', workload.path,
    ],
    { cwd: repoRoot, env: { ...process.env, KUBECONFIG: kubeconfig, NODE_NAME: NODE, BUILDFLEET_BUILD_IMAGE: BUILD_IMAGE, METADATA_SERVER_DETECTION: 'none' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  agent.stdout!.on('data', (chunk) => (agentLog += chunk));
  agent.stderr!.on('data', (chunk) => (agentLog += chunk));
  const running = () => assert.equal(agent!.exitCode, null, `the agent exited: ${agentLog}`);
  try {
    // Healthy runtime, image not yet on the node: the condition is False, the taint stays.
    await waitFor('RuntimeUnhealthy=False', 30_000, async () => (running(), (await condition())?.status === 'False'));
    assert.equal((await condition())?.reason, 'ProbeAnswered');
    await waitFor('a taint check by the agent', 10_000, async () => api.requests.some((r) => r.path.includes('watch=true')));
    assert.equal((await core.readNode({ name: NODE })).spec?.taints?.length, 1, 'the taint stays until the image is there');
    // kubelet reports the pre-pulled image: the taint goes.
    await core.patchNodeStatus({ name: NODE, body: { status: { images: [{ names: [BUILD_IMAGE] }, { names: ['pause:3.9'] }] } } }, merge);
    await waitFor('the startup taint removed', 10_000, async () => (running(), ((await core.readNode({ name: NODE })).spec?.taints ?? []).length === 0));

    // Builds on the node; the budget allows one unavailable, and a build elsewhere is not Ready yet.
    for (const pod of [buildPod('build-1', NODE), buildPod('build-2', NODE), buildPod('build-3', 'gke-ci-pool-8', false)]) await core.createNamespacedPod({ namespace: 'ci', body: pod });
    await api.kubeConfig().makeApiClient(PolicyV1Api).createNamespacedPodDisruptionBudget({ namespace: 'ci', body: { metadata: { name: 'build' }, spec: { maxUnavailable: 1, selector: { matchLabels: { app: 'build' } } } } });

    // The runtime hangs.
    const hungPid = docker.dockerdPid!;
    process.kill(hungPid, 'SIGSTOP');
    const evictions = () => api.requests.map((r, i) => ({ ...r, i })).filter((r) => r.path.includes('/eviction'));
    await waitFor('the budget refusing an eviction', 30_000, async () => (running(), evictions().some((r) => r.status === 429)));
    const during = await core.readNode({ name: NODE });
    assert.equal(during.spec?.unschedulable, true, 'cordoned while the drain waits');
    const hung = during.status?.conditions?.find((c) => c.type === 'RuntimeUnhealthy');
    assert.equal(hung?.status, 'True');
    assert.equal(hung?.reason, 'RuntimeHung');
    assert.match(hung?.message ?? '', /no answer within 1000 ms \(\d+ probes in a row\)/);
    assert.equal(evictions().filter((r) => r.status === 201).length, 0, 'no build evicted while its budget says no');
    const finishedAt = api.requests.length;
    await core.patchNamespacedPodStatus({ name: 'build-3', namespace: 'ci', body: { status: { phase: 'Succeeded' } } }, merge);

    // systemd's part: the restart command killed dockerd; start it again.
    await waitFor('dockerd killed by the restart command', 40_000, async () => (running(), !isAlive(hungPid)));
    const restartedAt = api.requests.length;
    await docker.startDockerd();
    await waitFor('RuntimeUnhealthy cleared after the restart', 30_000, async () => (running(), (await condition())?.reason === 'RuntimeRestarted'));

    const node = await core.readNode({ name: NODE });
    assert.equal((await condition())?.status, 'False');
    assert.notEqual(node.spec?.unschedulable, true, 'uncordoned');
    const granted = evictions().filter((r) => r.status === 201);
    assert.equal(granted.length, 2, 'both builds evicted');
    assert.ok(granted.every((r) => r.i > finishedAt && r.i < restartedAt), 'evicted once the budget allowed, before the restart');
    assert.equal(api.requests.filter((r) => r.method === 'DELETE').length, 0, 'no pod deleted outright');
    assert.deepEqual((await core.listNamespacedPod({ namespace: 'ci', fieldSelector: `spec.nodeName=${NODE}` })).items, []);
    assert.notEqual(docker.dockerdPid, hungPid);
    const events = (await core.listNamespacedEvent({ namespace: 'default' })).items.filter((e) => e.involvedObject.name === NODE);
    events.sort((a, b) => Number(a.metadata?.resourceVersion) - Number(b.metadata?.resourceVersion));
    assert.deepEqual(events.map((e) => e.reason), ['StartupTaintRemoved', 'RuntimeHung', 'Cordoned', 'Uncordoned', 'RuntimeRestarted']);
    // A DaemonSet pod being stopped: SIGTERM ends the agent cleanly.
    const exited = new Promise<number | null>((resolve) => agent!.once('exit', (code) => resolve(code)));
    agent.kill('SIGTERM');
    assert.equal(await exited, 0, agentLog);
    assert.match(agentLog, /agent-stopped/);
  } finally {
    await workload.remove();
  }
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
