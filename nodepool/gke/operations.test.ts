import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { errorOf } from '../../test/helpers/assertions.js';
import { FAKE_TOKEN, FAST_POLLS, gkeSpec, startFakeGke, type FakeGkeSetup } from '../../test/fakes/gke/connect.js';
import { clusterManagerTransport } from './client.js';
import { gkeDryRun, wireRequests } from './dry-run.js';
import { GkeOperations } from './operations.js';
import { createNodePoolRequest, deleteNodePoolRequest, gkePoolName, setNodePoolAutoscalingRequest, setNodePoolSizeRequest, updateNodePoolRequest } from './requests.js';

// The real @google-cloud/container client (REST fallback) against the fake GKE on loopback.

const spec = gkeSpec({
  nodes: 2,
  gke: {
    bootDisk: { type: 'hyperdisk-balanced', sizeGb: 200, provisionedIops: 6000, provisionedThroughput: 290 },
    secondaryBootDisk: 'ci-build-images-1',
    imageStreaming: true,
    autoscaling: { min: 1, max: 4 },
    labels: { team: 'ci' },
  },
});
const gke = spec.gke!;
const pool = gkePoolName(spec);
const cluster = '/v1/projects/build-proj/locations/us-central1/clusters/builds';
let setup: FakeGkeSetup;

before(async () => {
  setup = await startFakeGke(spec);
});
after(async () => {
  await setup?.stop();
});

/** What the client puts on the wire for this spec: enums as numbers, int64 as strings, its default maps. */
const expectedCreateBody = {
  nodePool: {
    name: pool,
    initialNodeCount: 2,
    autoscaling: { enabled: true, minNodeCount: 1, maxNodeCount: 4 },
    config: {
      machineType: 'n2-standard-8',
      imageType: 'COS_CONTAINERD',
      bootDisk: { diskType: 'hyperdisk-balanced', sizeGb: '200', provisionedIops: '6000', provisionedThroughput: '290' },
      localNvmeSsdBlockConfig: { localSsdCount: 1 },
      labels: { team: 'ci', 'buildfleet.io/pool': 'ci' },
      taints: [{ key: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull', value: 'true', effect: 1 }],
      kubeletConfig: { imageGcHighThresholdPercent: 85, imageGcLowThresholdPercent: 80 },
      secondaryBootDisks: [{ mode: 1, diskImage: 'projects/build-proj/global/images/ci-build-images-1' }],
      gcfsConfig: { enabled: true },
      metadata: {},
      resourceLabels: {},
    },
  },
};

test('create: the exact request, Bearer auth, polled until DONE; the dry run prints the same request', async () => {
  const { fake, operations } = setup;
  const operation = await operations.run(createNodePoolRequest(spec));
  assert.equal(operation.status, 'DONE');
  const [create, ...polls] = fake.requests;
  assert.deepEqual({ ...create, query: undefined }, { httpMethod: 'POST', path: `${cluster}/nodePools`, query: undefined, body: expectedCreateBody, authorization: `Bearer ${FAKE_TOKEN}` });
  assert.equal(create!.query, '?$alt=json;enum-encoding=int');
  assert.deepEqual(polls.map((r) => `${r.httpMethod} ${r.path}`), ['GET /v1/projects/build-proj/locations/us-central1/operations/operation-1', 'GET /v1/projects/build-proj/locations/us-central1/operations/operation-1']);
  assert.equal(fake.pools.get(pool)?.status, 2, 'RUNNING once DONE');
  // The dry run goes through the same encoder: what it prints is what was sent.
  const [dry] = await wireRequests([createNodePoolRequest(spec)]);
  assert.deepEqual(dry, { httpMethod: create!.httpMethod, path: create!.path, body: create!.body });
});

test('resize: setSize with the count; a FAILED_PRECONDITION from another operation is retried until accepted', async () => {
  const { fake, operations } = setup;
  fake.requests.length = 0;
  fake.holdBusy(2);
  const lines: string[] = [];
  const logged = new GkeOperations(setup.transport, gke, { ...FAST_POLLS, log: (line) => lines.push(line) });
  await logged.run(setNodePoolSizeRequest(gke, pool, 3));
  const sizes = fake.mutations();
  assert.equal(sizes.length, 3, 'refused twice, accepted the third time');
  for (const request of sizes) assert.deepEqual({ httpMethod: request.httpMethod, path: request.path, body: request.body }, { httpMethod: 'POST', path: `${cluster}/nodePools/${pool}:setSize`, body: { nodeCount: 3 } });
  assert.equal(lines.filter((line) => /FAILED_PRECONDITION .*incompatible operation/.test(line)).length, 2, lines.join('\n'));
  assert.equal(fake.pools.get(pool)?.nodeCount, 3);
});

test('two calls at once on one cluster are serialised: the second waits for the first to be DONE', async () => {
  const { fake, operations } = setup;
  fake.requests.length = 0;
  await Promise.all([operations.run(setNodePoolSizeRequest(gke, pool, 4)), operations.run(setNodePoolSizeRequest(gke, pool, 2))]);
  const order = fake.requests.map((r) => (r.httpMethod === 'POST' ? `size ${(r.body as { nodeCount: number }).nodeCount}` : 'poll'));
  assert.deepEqual(order, ['size 4', 'poll', 'poll', 'size 2', 'poll', 'poll'], 'no refusal: never two at once');
  assert.equal(fake.pools.get(pool)?.nodeCount, 2);
});

test('an operation that ends in error is one line naming the call, the operation and what GKE said', async () => {
  const { fake, operations } = setup;
  fake.failNextOperation('RESOURCE_EXHAUSTED', 'Insufficient regional quota to satisfy request: resource "LOCAL_SSD_TOTAL_GB": request requires \'375.0\' and is short \'375.0\'.\nTry again later.');
  await assert.rejects(
    operations.run(setNodePoolSizeRequest(gke, pool, 9)),
    errorOf('environment', new RegExp(`^GKE quota exceeded for setNodePoolSize ${pool} in projects/build-proj/locations/us-central1/clusters/builds \\(operation operation-\\d+\\): Insufficient regional quota .*LOCAL_SSD_TOTAL_GB.* Try again later\\. \\(raise the quota of project build-proj`)),
  );
  fake.failNextOperation('INVALID_ARGUMENT', 'Machine type e2-small does not support local SSDs.');
  await assert.rejects(operations.run(setNodePoolSizeRequest(gke, pool, 9)), errorOf('usage', /^GKE INVALID_ARGUMENT for setNodePoolSize .*: Machine type e2-small does not support local SSDs\.$/));
  assert.equal(fake.pools.get(pool)?.nodeCount, 2, 'a failed operation changed nothing');
});

test('quota and permission refusals are named; a missing cluster is not-found, a missing pool an answer', async () => {
  const { fake, operations } = setup;
  fake.refuse({ method: 'createNodePool', status: 'RESOURCE_EXHAUSTED', message: 'Quota exceeded for quota metric CPUS.' });
  await assert.rejects(operations.run(createNodePoolRequest(spec, { name: 'other' })), errorOf('environment', /^GKE quota exceeded for createNodePool other in .*: Quota exceeded for quota metric CPUS\. \(raise the quota of project build-proj/));
  fake.refuse({ method: 'deleteNodePool', status: 'PERMISSION_DENIED', message: "Required 'container.nodePools.delete' permission for 'projects/build-proj/locations/us-central1/clusters/builds/nodePools/x'." });
  await assert.rejects(operations.run(deleteNodePoolRequest(gke, pool)), errorOf('auth', /^GKE permission denied for deleteNodePool .*container\.nodePools\.delete.*roles\/container\.admin/));
  assert.equal(await operations.getNodePool(gke, 'no-such-pool'), undefined);
  await assert.rejects(operations.getNodePool({ ...gke, cluster: 'nope' }, pool), errorOf('not-found', /^GKE: not found for getNodePool .*clusters\/nope.*check gke\.project, gke\.location and gke\.cluster/));
  await assert.rejects(operations.getNodePool({ ...gke, project: 'someone-else' }, pool), errorOf('auth', /permission denied .*someone-else/));
});

test('a wrong token is refused as UNAUTHENTICATED, naming Application Default Credentials', async () => {
  const { tokenClient } = await import('../../test/fakes/gke/connect.js');
  const transport = await clusterManagerTransport({ apiEndpoint: '127.0.0.1', port: setup.fake.port, protocol: 'http', authClient: tokenClient('wrong') });
  try {
    await assert.rejects(new GkeOperations(transport, gke, FAST_POLLS).getNodePool(gke, pool), errorOf('auth', /Application Default Credentials/));
  } finally {
    await transport.close();
  }
});

test('in place: updateNodePool is a PUT carrying only what changed (NodeLabels, NodeTaints, kubeletConfig, gcfsConfig), setNodePoolAutoscaling a POST :setAutoscaling; the dry run prints the same', async () => {
  const { fake, operations } = setup;
  fake.requests.length = 0;
  const wanted = gkeSpec({ ...spec, gke: { ...gke, labels: { team: 'web' }, imageStreaming: false, kubeletConfig: { imageGcHighThresholdPercent: 70, imageGcLowThresholdPercent: 60 }, autoscaling: { min: 2, max: 6 } } });
  const requests = [updateNodePoolRequest(wanted, pool, ['labels', 'taints', 'kubeletConfig', 'gcfsConfig']), setNodePoolAutoscalingRequest(wanted.gke!, pool)];
  for (const request of requests) assert.equal((await operations.run(request)).status, 'DONE');
  const sent = fake.mutations().map((r) => ({ httpMethod: r.httpMethod, path: r.path, body: r.body }));
  assert.deepEqual(sent, [
    {
      httpMethod: 'PUT',
      path: `${cluster}/nodePools/${pool}`,
      body: {
        labels: { labels: { team: 'web', 'buildfleet.io/pool': 'ci' } },
        taints: { taints: [{ key: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull', value: 'true', effect: 1 }] },
        kubeletConfig: { imageGcHighThresholdPercent: 70, imageGcLowThresholdPercent: 60 },
        gcfsConfig: { enabled: false },
      },
    },
    { httpMethod: 'POST', path: `${cluster}/nodePools/${pool}:setAutoscaling`, body: { autoscaling: { enabled: true, minNodeCount: 2, maxNodeCount: 6 } } },
  ]);
  assert.deepEqual(await wireRequests(requests), sent);
  const stored = fake.pools.get(pool)!;
  assert.deepEqual((stored.config as { labels: object }).labels, { team: 'web', 'buildfleet.io/pool': 'ci' });
  assert.deepEqual((stored.config as { gcfsConfig: object }).gcfsConfig, { enabled: false });
  assert.deepEqual(stored.autoscaling, { enabled: true, minNodeCount: 2, maxNodeCount: 6 });
  assert.equal(stored.nodeCount, 2, 'no node added or removed');
  fake.holdBusy(1);
  await operations.run(setNodePoolAutoscalingRequest(gke, pool));
  assert.equal(fake.mutations().length, 4, 'refused once (another operation), sent again');
});

test('delete: DELETE on the pool, polled to DONE, and the pool is gone', async () => {
  const { fake, operations } = setup;
  fake.requests.length = 0;
  await operations.run(deleteNodePoolRequest(gke, pool));
  assert.deepEqual(fake.mutations().map((r) => ({ httpMethod: r.httpMethod, path: r.path, body: r.body })), [{ httpMethod: 'DELETE', path: `${cluster}/nodePools/${pool}`, body: undefined }]);
  assert.deepEqual((await gkeDryRun({ kind: 'delete', spec })).requests, [{ httpMethod: 'DELETE', path: `${cluster}/nodePools/${pool}` }]);
  assert.equal((await gkeDryRun({ kind: 'resize', spec, nodes: 7 })).text, `POST ${cluster}/nodePools/${pool}:setSize\n{\n  "nodeCount": 7\n}`);
  assert.equal(fake.pools.has(pool), false);
  assert.equal(await operations.getNodePool(gke, pool), undefined);
});

test('an operation that never gets DONE fails after the operation timeout, in one line naming it', async () => {
  const { fake } = setup;
  fake.options.pollsToDone = 1_000_000;
  const impatient = new GkeOperations(setup.transport, gke, { ...FAST_POLLS, operationTimeoutMs: 300 });
  await assert.rejects(impatient.run(createNodePoolRequest(spec)), errorOf('network', /^GKE createNodePool .*: operation operation-\d+ not DONE after 0\.3 s \(still RUNNING\); see it with "gcloud container operations describe operation-\d+"$/));
});
