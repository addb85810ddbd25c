import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { V1DaemonSet } from '@kubernetes/client-node';
import { runCli } from '../test/helpers/real.js';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { DEFAULT_STARTUP_TAINT, kubeManifests } from './manifests.js';
import { inClusterSettings, type InClusterSettings } from './in-cluster-settings.js';
import { deviceNamed, majorMinor } from './node-disks.js';

const DIGEST = 'sha256:' + 'c'.repeat(64);
const BUILD_IMAGE = `reg.example/ci/build@${DIGEST}`;

test('the agent DaemonSet\'s args and env parse with the real CLI into the paths the DaemonSet mounts', { timeout: 60_000 }, async () => {
  const manifests = kubeManifests({ pool: 'ci', namespace: 'buildfleet', buildImage: BUILD_IMAGE, agentImage: 'a/agent:1', startupTaintKey: DEFAULT_STARTUP_TAINT, runtimeSocket: '/run/containerd/containerd.sock', runtimeDataDir: '/var/lib/containerd', workloadDevice: '/dev/nvme0n1' });
  const agent = manifests.find((o) => o.metadata.name === 'buildfleet-agent-ci') as unknown as V1DaemonSet;
  const container = agent.spec!.template.spec!.containers[0]!;
  // What kubelet gives the container: plain values, and the downward API's spec.nodeName.
  const env = Object.fromEntries(container.env!.map((e) => [e.name, e.value ?? (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName' ? 'gke-ci-node-7' : '')]));
  const result = await runCli([...container.args!, '--dry-run', '--json'], env);
  assert.equal(result.exitCode, 0, result.stderr);
  const settings = JSON.parse(result.stdout) as InClusterSettings;
  const mounted = (name: string) => container.volumeMounts!.find((m) => m.name === name)!.mountPath;
  assert.equal(settings.nodeName, 'gke-ci-node-7');
  assert.deepEqual(settings.buildImage, { reference: BUILD_IMAGE, digest: DIGEST });
  assert.equal(settings.startupTaintKey, DEFAULT_STARTUP_TAINT);
  assert.equal(settings.runtimeSocket, mounted('runtime-socket'));
  assert.equal(settings.diskstatsPath, mounted('diskstats'));
  assert.deepEqual(settings.disks, { runtime: mounted('runtime-disk'), workload: mounted('workload') });
  assert.equal(settings.runtime, 'auto');
  // A bad flag: one line, usage exit code.
  const bad = await runCli([...container.args!, '--dry-run', '--runtime', 'podman'], env);
  assert.equal(bad.exitCode, 2);
  assert.match(bad.stderr, /^buildfleet: error: --runtime "podman": give cri .* or auto\n?$/);
});

test('in-cluster settings: flags over env, the pool spec\'s defaults, one usage error for bad input', () => {
  const settings = inClusterSettings({ probeInterval: '0.5', failureThreshold: '2', runtime: 'cri' }, { NODE_NAME: 'n1', BUILDFLEET_BUILD_IMAGE: BUILD_IMAGE, BUILDFLEET_RUNTIME: 'docker' });
  assert.deepEqual(settings.probe, { intervalSeconds: 0.5, timeoutSeconds: 10, failureThreshold: 2 });
  assert.equal(settings.runtime, 'cri');
  assert.match(settings.restartCommand, /systemctl restart containerd$/);
  assert.equal(inClusterSettings({ runtime: 'docker' }, { NODE_NAME: 'n1' }).restartCommand.endsWith('restart docker'), true);
  assert.equal(inClusterSettings({}, { NODE_NAME: 'n1' }).buildImage, undefined);
  const usage = (re: RegExp) => (e: unknown) => e instanceof BuildfleetError && e.kind === 'usage' && re.test(e.message);
  assert.throws(() => inClusterSettings({}, {}), usage(/NODE_NAME/));
  assert.throws(() => inClusterSettings({ failureThreshold: '0' }, { NODE_NAME: 'n' }), usage(/--failure-threshold "0"/));
  assert.throws(() => inClusterSettings({}, { NODE_NAME: 'n', BUILDFLEET_BUILD_IMAGE: 'reg.example/ci/build:1' }), usage(/not pinned by digest/));
});

test('a mount\'s device by its major:minor in diskstats', () => {
  assert.deepEqual(majorMinor(0x10301), { major: 259, minor: 1 });
  assert.deepEqual(majorMinor(0x800), { major: 8, minor: 0 });
  const diskstats = ['   8       0 sda 1 2 3 4 5 6 7 8 9 10 11', '   8       1 sda1 1 2 3 4 5 6 7 8 9 10 11', ' 259       1 nvme0n1 1 2 3 4 5 6 7 8 9 10 11'].join('\n');
  assert.equal(deviceNamed(diskstats, { major: 8, minor: 1 }), 'sda1');
  assert.equal(deviceNamed(diskstats, { major: 259, minor: 1 }), 'nvme0n1');
  assert.equal(deviceNamed(diskstats, { major: 7, minor: 3 }), undefined);
});
