import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { ClusterLink } from '../../test/fakes/gke/cluster-link.js';
import { FakeGke } from '../../test/fakes/gke/server.js';
import { startFakeKubeApi, type FakeKubeApi } from '../../test/fakes/kube-api/server.js';
import { RESOURCES } from '../../test/fakes/kube-api/store.js';
import { testCliCommand, repoRoot, runCli, type CliResult } from '../../test/helpers/real.js';
import { gkeSpec } from '../../test/fakes/gke/connect.js';
import { gkePoolName } from './requests.js';

// The real CLI, in its own process, drives a GKE pool end to end against the fake GKE (REST,
// loopback) joined to the fake Kubernetes API. It finds them only as a user would be told to:
// KUBECONFIG (a kubeconfig file) and BUILDFLEET_GKE_ENDPOINT (an emulator on loopback: no
// credentials). The test plays the agent (it removes the startup taint).

const NODES = RESOURCES.find((type) => type.plural === 'nodes')!;
const cluster = '/v1/projects/build-proj/locations/us-central1/clusters/builds';
const taintKey = 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull';
const specInput = { name: 'ci', provider: 'gke', nodes: 2, images: ['us-docker.pkg.dev/build-proj/ci/build:1'], gke: { project: 'build-proj', location: 'us-central1', cluster: 'builds' } };
let fake: FakeGke;
let kube: FakeKubeApi;
let link: ClusterLink;
let dir: string;
let env: Record<string, string>;

before(async () => {
  fake = await FakeGke.start({ project: 'build-proj', location: 'us-central1', cluster: 'builds', token: null, pollsToDone: 1 });
  kube = await startFakeKubeApi();
  link = new ClusterLink(fake, kube);
  dir = await mkdtemp(join(tmpdir(), 'gke-cli-e2e-'));
  const kubeconfig = { apiVersion: 'v1', kind: 'Config', clusters: [{ name: 'fake', cluster: { server: kube.url, 'insecure-skip-tls-verify': true } }], users: [{ name: 'fake', user: {} }], contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake' } }], 'current-context': 'fake' };
  await writeFile(join(dir, 'kubeconfig'), stringify(kubeconfig));
  await writeFile(join(dir, 'pool.yaml'), stringify(specInput));
  await writeFile(join(dir, 'pool-relabelled.yaml'), stringify({ ...specInput, nodes: 3, gke: { ...specInput.gke, labels: { team: 'web' }, autoscaling: { min: 1, max: 5 } } }));
  await writeFile(join(dir, 'pool-bigger-disk.yaml'), stringify({ ...specInput, nodes: 3, gke: { ...specInput.gke, bootDisk: { type: 'pd-balanced', sizeGb: 200 } } }));
  env = {
    BUILDFLEET_STATE_DIR: join(dir, 'state'),
    KUBECONFIG: join(dir, 'kubeconfig'),
    BUILDFLEET_GKE_ENDPOINT: `http://127.0.0.1:${fake.port}`,
    METADATA_SERVER_DETECTION: 'none',
    HOME: dir,
    GOOGLE_APPLICATION_CREDENTIALS: join(dir, 'no-such-credentials.json'),
  };
});
after(async () => {
  link?.close();
  await fake?.close();
  await kube?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function cli(...args: string[]): Promise<CliResult> {
  const started = Date.now();
  const result = await runCli(args, env);
  if (process.env.GKE_E2E_TIMES) process.stderr.write(`${args.join(' ')}: ${Date.now() - started} ms\n`);
  assert.equal(result.exitCode, 0, `buildfleet ${args.join(' ')} failed: ${result.stderr}`);
  return result;
}
/**
 * `--dry-run` in a process that may open no socket (test/fakes/gke/no-network.mjs), with no
 * credentials, no kubeconfig and no endpoint: only the state dir.
 */
async function dryRun(file: string): Promise<{ requests: { httpMethod: string; path: string; body?: unknown }[]; steps: string[] }> {
  const nowhere = join(dir, 'nowhere');
  const result = await execa(process.execPath, ['--import', join(repoRoot, 'test/fakes/gke/no-network.mjs'), ...testCliCommand(), '--json', 'pool', 'apply', '-f', file, '--dry-run'], {
    cwd: repoRoot,
    env: { CI: 'true', BUILDFLEET_STATE_DIR: env.BUILDFLEET_STATE_DIR!, HOME: nowhere, KUBECONFIG: join(nowhere, 'kubeconfig'), GOOGLE_APPLICATION_CREDENTIALS: join(nowhere, 'adc.json'), METADATA_SERVER_DETECTION: 'none', BUILDFLEET_GKE_ENDPOINT: '' },
    reject: false,
    timeout: 60_000,
  });
  assert.doesNotMatch(result.stderr, /NETWORK ATTEMPT/);
  assert.equal(result.exitCode, 0, result.stderr);
  return JSON.parse(result.stdout);
}

type NodeJson = { name: string; phase: string; cordoned: boolean; conditions: Record<string, { status: string; reason: string }>; details: { ready: boolean; unschedulable: boolean; taints: { key: string }[]; gkeNodePool: string } };
const json = (result: CliResult) => JSON.parse(result.stdout) as { pool?: { nodes: NodeJson[] }; nodes?: NodeJson[] };

const first = gkeSpec({ nodes: 2 });
const rotated = gkeSpec({ nodes: 3, gke: { bootDisk: { type: 'pd-balanced', sizeGb: 200 } } });

test('pool apply (create) -> status -> resize -> labels and autoscaling change in place -> a disk change rotates with never fewer serving nodes than asked -> delete, through the real CLI', { timeout: 120_000 }, async () => {
  // Create, not waiting for the agent: the nodes are registered Ready but still carry the startup taint.
  await cli('--json', 'pool', 'apply', '-f', join(dir, 'pool.yaml'), '--no-wait');
  assert.deepEqual(fake.mutations().map((r) => [r.httpMethod, r.path]), [['POST', `${cluster}/nodePools`]]);
  assert.equal((fake.mutations()[0]!.body as { nodePool: { initialNodeCount: number } }).nodePool.initialNodeCount, 2);
  assert.ok(fake.requests.every((r) => r.authorization === undefined), 'no credentials go to an emulator');

  // The agent (played here) raises a problem condition on one node.
  const [one] = link.nodes(gkePoolName(first));
  const status = one!.status as { conditions: object[] };
  kube.store.replace(NODES, undefined, one!.metadata.name, { ...one!, status: { ...status, conditions: [...status.conditions, { type: 'WorkloadDiskSaturated', status: 'True', reason: 'IoUtilisation', message: 'sdb busy 97% over 30 s' }] } });
  let nodes = json(await cli('--json', 'pool', 'status', 'ci')).nodes!;
  assert.equal(nodes.length, 2);
  for (const node of nodes) {
    assert.equal(node.phase, 'Pulling', 'Ready but still tainted');
    assert.equal(node.details.ready, true);
    assert.equal(node.details.unschedulable, false);
    assert.deepEqual(node.details.taints.map((t) => t.key), [taintKey]);
    assert.equal(node.conditions.Ready!.status, 'True');
  }
  assert.deepEqual(nodes[0]!.conditions.WorkloadDiskSaturated, { status: 'True', reason: 'IoUtilisation', message: 'sdb busy 97% over 30 s', lastTransitionTime: '' });

  // Resize (human output): one setNodePoolSize; the command waits until the new node serves.
  link.untaintAll();
  link.untaintAfterMs = 200;
  const table = (await cli('pool', 'resize', 'ci', '--nodes', '3')).stdout;
  assert.deepEqual(fake.mutations().slice(1).map((r) => [r.path, r.body]), [[`${cluster}/nodePools/${gkePoolName(first)}:setSize`, { nodeCount: 3 }]]);
  assert.match(table, /resize node pool ci-[0-9a-f]{6} from 2 to 3 node\(s\)/);
  assert.match(table, /3\/3 nodes Ready/);
  assert.match(table, /NODE +PHASE +K8S READY +SCHEDULING +TAINTS +RUNTIME +RUNTIME DISK +WORKLOAD DISK/);
  assert.match(table, /gke-builds-ci-[0-9a-f]{6}-0001 +Ready +True +schedulable +- +- +- +Saturated \(IoUtilisation\)/);

  // New labels and autoscaling bounds: GKE changes them in place, so no rotation and no node
  // replaced. The dry run prints exactly what the apply then sends.
  const poolPath = `${cluster}/nodePools/${gkePoolName(first)}`;
  const namesBefore = link.nodes(gkePoolName(first)).map((node) => node.metadata.name);
  let sentBefore = fake.mutations().length;
  const dryUpdate = await dryRun(join(dir, 'pool-relabelled.yaml'));
  assert.equal(fake.mutations().length, sentBefore);
  assert.deepEqual(dryUpdate.steps, [`update node pool ${gkePoolName(first)} in place (updateNodePool): labels`, `set autoscaling of node pool ${gkePoolName(first)} to 1-5 nodes (setNodePoolAutoscaling)`]);
  nodes = json(await cli('--json', 'pool', 'apply', '-f', join(dir, 'pool-relabelled.yaml'))).pool!.nodes;
  const updates = fake.mutations().slice(sentBefore).map((r) => ({ httpMethod: r.httpMethod, path: r.path, body: r.body }));
  assert.deepEqual(updates, [
    { httpMethod: 'PUT', path: poolPath, body: { labels: { labels: { team: 'web', 'buildfleet.io/pool': 'ci' } } } },
    { httpMethod: 'POST', path: `${poolPath}:setAutoscaling`, body: { autoscaling: { enabled: true, minNodeCount: 1, maxNodeCount: 5 } } },
  ]);
  assert.deepEqual(updates, dryUpdate.requests, 'the dry run printed exactly what was sent');
  assert.deepEqual(fake.pools.get(gkePoolName(first))?.autoscaling, { enabled: true, minNodeCount: 1, maxNodeCount: 5 });
  assert.deepEqual(link.nodes(gkePoolName(first)).map((node) => [node.metadata.name, node.metadata.labels?.team]), namesBefore.map((name) => [name, 'web']), 'the same nodes, relabelled');
  assert.deepEqual(nodes.map((n) => [n.name, n.phase]), namesBefore.map((name) => [name, 'Ready']));

  // A bigger boot disk: GKE cannot change it in place, so a rotation. Never fewer than 3 serving.
  // The dry run first: it sends nothing, and prints exactly what the apply then sends.
  const requestsBefore = fake.requests.length;
  sentBefore = fake.mutations().length;
  const dry = await dryRun(join(dir, 'pool-bigger-disk.yaml'));
  assert.equal(fake.requests.length, requestsBefore);
  assert.match(dry.steps.join('\n'), /create node pool ci-[0-9a-f]{6} with 3 nodes/);
  const since = Date.now();
  nodes = json(await cli('--json', 'pool', 'apply', '-f', join(dir, 'pool-bigger-disk.yaml'))).pool!.nodes;
  const rotation = fake.mutations().slice(sentBefore);
  assert.deepEqual(rotation.map((r) => [r.httpMethod, r.path]), [
    ['POST', `${cluster}/nodePools`],
    ['DELETE', `${cluster}/nodePools/${gkePoolName(first)}`],
  ]);
  assert.deepEqual(rotation.map((r) => ({ httpMethod: r.httpMethod, path: r.path, ...(r.body === undefined ? {} : { body: r.body }) })), dry.requests, 'the dry run printed exactly what was sent');
  const created = rotation[0]!.body as { nodePool: { name: string; initialNodeCount: number; config: { diskSizeGb?: number; bootDisk: { sizeGb: string | number } } } };
  assert.equal(created.nodePool.name, gkePoolName(rotated));
  assert.equal(created.nodePool.initialNodeCount, 3);
  assert.equal(Number(created.nodePool.config.bootDisk.sizeGb), 200);
  assert.deepEqual(nodes.map((n) => [n.phase, n.details.gkeNodePool]), Array(3).fill(['Ready', gkePoolName(rotated)]));
  assert.equal(link.nodes(gkePoolName(first)).length, 0, 'the old node pool is gone');
  const during = link.samples.filter((s) => s.pool === 'ci' && s.at >= since);
  assert.ok(during.some((s) => s.nodes === 6), 'both node pools existed at one moment');
  assert.equal(link.lowestServing('ci', since), 3, `serving counts during the rotation: ${during.map((s) => s.serving).join(' ')}`);

  // Delete: drained, then the node pool goes, and the record.
  sentBefore = fake.mutations().length;
  await cli('--json', 'pool', 'delete', 'ci');
  assert.deepEqual(fake.mutations().slice(sentBefore).map((r) => [r.httpMethod, r.path]), [['DELETE', `${cluster}/nodePools/${gkePoolName(rotated)}`]]);
  assert.equal(fake.pools.size, 0);
  assert.deepEqual(link.nodes(), []);
  assert.deepEqual(await readdir(join(dir, 'state', 'pools')).catch(() => []), []);
});
