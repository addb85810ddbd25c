import assert from 'node:assert/strict';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import { startFakeKubeApi, type FakeKubeApi } from '../test/fakes/kube-api/server.js';
import { tempDir } from '../test/helpers/real.js';
import { waitFor } from '../test/helpers/wait.js';
import type { ContainerRuntime } from '../nodepool/runtime/container-runtime.js';
import { InClusterAgent } from './in-cluster-agent.js';
import { inClusterSettings } from './in-cluster-settings.js';
import { majorMinor } from './node-disks.js';

/**
 * Disk saturation as NodeConditions: the agent's disk detector on a diskstats file the test
 * writes (the workload disk busy all the time, then idle), the disks found by their mounts'
 * major:minor in it, the conditions and Events on the fake API. A runtime that always answers.
 */

const NODE = 'gke-ci-pool-3';
let api: FakeKubeApi;
let dir: { path: string; remove(): Promise<void> };
before(async () => {
  api = await startFakeKubeApi();
  dir = await tempDir('kube-disks-');
});
after(async () => {
  await api?.close();
  await dir?.remove();
});

const answering: ContainerRuntime = { listContainers: async () => [], hasImage: async () => true, pullImage: async () => {} };

test('a busy workload disk: WorkloadDiskSaturated True with its reason and an Event, then False once calm; the runtime disk stays calm', { timeout: 30_000 }, async () => {
  const core = api.kubeConfig().makeApiClient(CoreV1Api);
  await core.createNode({ body: { metadata: { name: NODE } } });
  // Two mounts on different devices: the test dir's filesystem (workload) and /proc (runtime).
  const workload = majorMinor((await stat(dir.path)).dev);
  const runtime = majorMinor((await stat('/proc')).dev);
  const diskstats = join(dir.path, 'diskstats');
  let busyMs = 0;
  const write = () => writeFile(diskstats, [`${workload.major} ${workload.minor} wl0 0 0 0 0 0 0 0 0 0 ${busyMs} ${busyMs}`, `${runtime.major} ${runtime.minor} rt0 0 0 0 0 0 0 0 0 0 0 0`].join('\n') + '\n');
  await write();
  const settings = inClusterSettings({ diskstats, runtimeDisk: '/proc', workloadDisk: dir.path, probeInterval: '0.2' }, { NODE_NAME: NODE });
  const log: string[] = [];
  const agent = new InClusterAgent({ settings: { ...settings, runtime: 'docker', saturation: { ...settings.saturation, windowSeconds: 0.5, sampleSeconds: 0.1 } }, config: api.kubeConfig(), runtime: answering, log: (line) => log.push(line) });
  const running = agent.run();
  // The disk busy all the time: io_ticks grow faster than the clock (utilisation is capped at
  // 100%), so a write that lags the agent's read on a loaded machine still reads as busy.
  let last = Date.now();
  let busy = true;
  const ticker = setInterval(() => {
    const now = Date.now();
    if (busy) busyMs += 4 * (now - last);
    last = now;
    void write();
  }, 50);
  const condition = async (type: string) => (await core.readNode({ name: NODE })).status?.conditions?.find((c) => c.type === type);
  try {
    await waitFor('WorkloadDiskSaturated=True', 10_000, async () => (await condition('WorkloadDiskSaturated'))?.status === 'True');
    const saturated = await condition('WorkloadDiskSaturated');
    assert.equal(saturated?.reason, 'DiskBusy');
    assert.match(saturated?.message ?? '', /^utilisation \d+%, queue depth \d/);
    busy = false;
    await waitFor('WorkloadDiskSaturated=False', 10_000, async () => (await condition('WorkloadDiskSaturated'))?.status === 'False');
    assert.equal((await condition('WorkloadDiskSaturated'))?.reason, 'DiskCalm');
    assert.equal(await condition('RuntimeDiskSaturated'), undefined, 'the runtime disk was never saturated');
  } finally {
    clearInterval(ticker);
    agent.stop();
    await running;
  }
  assert.ok(!log.some((line) => line.startsWith('disks-not-watched')), log.join('\n'));
  const events = (await core.listNamespacedEvent({ namespace: 'default' })).items.filter((e) => e.involvedObject.name === NODE);
  events.sort((a, b) => Number(a.metadata?.resourceVersion) - Number(b.metadata?.resourceVersion));
  assert.deepEqual(events.map((e) => `${e.type} ${e.reason}`), ['Warning DiskBusy', 'Normal DiskCalm']);
});
