import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CoreV1Api, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { startFakeKubeApi, type FakeKubeApi } from '../test/fakes/kube-api/server.js';
import { ensureMachineSetup, tempDir } from '../test/helpers/real.js';
import { waitFor } from '../test/helpers/wait.js';
import { RegistryServer } from '../nodepool/daemons/index.js';
import { CriContainerd } from '../nodepool/agent/cri/cri-containerd.js';
import { ContainerdImages, PINNED_LABEL } from '../nodepool/agent/cri/pin.js';
import { pushRunnableTinyImage } from '../test/helpers/registry-fakes.js';
import { DEFAULT_STARTUP_TAINT } from './manifests.js';
import { InClusterAgent } from './in-cluster-agent.js';
import { inClusterRuntime, type InClusterRuntime } from './in-cluster-run.js';
import { inClusterSettings } from './in-cluster-settings.js';

/**
 * The agent on a containerd node (as on GKE), in this process through the entry's own runtime
 * choice (`--runtime auto` on containerd's socket -> CRI): the probe answers through the CRI
 * API, the build image is pinned once containerd holds it, and the startup taint goes once
 * kubelet (the test) reports the image.
 */

const NODE = 'gke-ci-pool-9';
const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
let api: FakeKubeApi;
let registry: RegistryServer;
let containerd: CriContainerd;
let dir: { path: string; remove(): Promise<void> };
let runtime: InClusterRuntime | undefined;
let agent: InClusterAgent | undefined;
let running: Promise<void> | undefined;

before(async () => {
  await ensureMachineSetup();
  dir = await tempDir('kube-cri-');
  api = await startFakeKubeApi();
  registry = await RegistryServer.start();
  containerd = await CriContainerd.start({ root: join(dir.path, 'containerd'), plainHttp: [new URL(registry.url).host] });
});

after(async () => {
  agent?.stop();
  await running?.catch(() => {});
  runtime?.close();
  await containerd?.stop();
  await registry?.stop();
  await api?.close();
  await dir?.remove();
});

test('the agent on a containerd node: CRI chosen by itself, the build image pinned once pulled, the taint removed once kubelet reports it', { timeout: 60_000 }, async () => {
  const image = await pushRunnableTinyImage(registry.url, 'ci/build', 'v2');
  const core = api.kubeConfig().makeApiClient(CoreV1Api);
  await core.createNode({ body: { metadata: { name: NODE }, spec: { taints: [{ key: DEFAULT_STARTUP_TAINT, value: 'true', effect: 'NoSchedule' }] } } });
  const settings = inClusterSettings(
    { runtimeSocket: containerd.socketPath, probeInterval: '0.3', probeTimeout: '2', diskstats: '/proc/diskstats', runtimeDisk: containerd.root, workloadDisk: dir.path },
    { NODE_NAME: NODE, BUILDFLEET_BUILD_IMAGE: image.reference },
  );
  assert.equal(settings.runtime, 'auto');
  runtime = await inClusterRuntime(settings);
  assert.equal(runtime.kind, 'cri');
  const log: string[] = [];
  agent = new InClusterAgent({ settings: { ...settings, runtime: runtime.kind }, config: api.kubeConfig(), runtime: runtime.runtime, ...(runtime.pinBuildImage && { pinBuildImage: runtime.pinBuildImage }), log: (line) => log.push(line) });
  running = agent.run();

  const condition = async () => (await core.readNode({ name: NODE })).status?.conditions?.find((c) => c.type === 'RuntimeUnhealthy');
  await waitFor('RuntimeUnhealthy=False through the CRI probe', 10_000, async () => (await condition())?.status === 'False');
  const images = new ContainerdImages(containerd.socketPath);
  try {
    assert.deepEqual(await images.byDigest(image.digest), [], 'nothing to pin before the pull');
    // The pre-pull DaemonSet's pod makes kubelet pull the image through CRI.
    await runtime.runtime.pullImage({ pinned: image.reference, digest: image.digest });
    await waitFor('the image pinned', 10_000, async () => {
      const records = await images.byDigest(image.digest);
      return records.length > 0 && records.every((r) => r.labels[PINNED_LABEL] === 'pinned');
    });
    assert.ok(log.some((line) => line.startsWith('image-pinned ') && line.includes(image.digest)), log.join('\n'));
  } finally {
    images.close();
  }
  assert.equal((await core.readNode({ name: NODE })).spec?.taints?.length, 1, 'the taint stays until kubelet reports the image');
  await core.patchNodeStatus({ name: NODE, body: { status: { images: [{ names: [image.reference] }] } } }, merge);
  await waitFor('the startup taint removed', 10_000, async () => ((await core.readNode({ name: NODE })).spec?.taints ?? []).length === 0);
});
