import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gkeSpec } from '../../test/fakes/gke/connect.js';
import { describeGkePlan, planGkeApply } from './apply.js';
import { connectionFromEnv } from './client.js';
import { gkePoolName } from './requests.js';

// Pure: what a GKE apply sends, from the recorded spec and the wanted one; where the CLI's client goes.

const spec = gkeSpec({ nodes: 2 });
const pool = `projects/build-proj/locations/us-central1/clusters/builds/nodePools/${gkePoolName(spec)}`;

test('a new pool is one createNodePool with the node count', () => {
  const plan = planGkeApply(undefined, spec);
  assert.equal(plan.createPool, true);
  assert.deepEqual(plan.requests.map((r) => [r.method, (r.request as { nodePool?: { initialNodeCount?: number } }).nodePool?.initialNodeCount]), [['createNodePool', 2]]);
});

test('a bigger count is one setNodePoolSize; a smaller one a setNodePoolSize per drained node; the same spec nothing', () => {
  assert.deepEqual(planGkeApply(spec, { ...spec, nodes: 5 }).requests, [{ method: 'setNodePoolSize', request: { name: pool, nodeCount: 5 } }]);
  assert.deepEqual(planGkeApply({ ...spec, nodes: 4 }, { ...spec, nodes: 1 }).requests.map((r) => (r.request as { nodeCount: number }).nodeCount), [3, 2, 1]);
  const same = planGkeApply(spec, spec);
  assert.deepEqual(same.requests, []);
  assert.deepEqual(describeGkePlan(same, spec), ['pool ci matches its spec: nothing to do']);
});

test('a boot disk change is a rotation (create the new pool with every wanted setting, delete the old); no in-place update beside it', () => {
  const bigger = gkeSpec({ nodes: 3, gke: { bootDisk: { type: 'pd-balanced', sizeGb: 200 }, labels: { team: 'web' }, autoscaling: { min: 1, max: 4 } } });
  const plan = planGkeApply(spec, bigger);
  assert.deepEqual(plan.requests.map((r) => r.method), ['createNodePool', 'deleteNodePool']);
  assert.equal(plan.rotation?.newPool, gkePoolName(bigger));
  assert.equal(plan.inPlace, undefined);
  const nodePool = (plan.requests[0]!.request as { nodePool: { config: { labels: object }; autoscaling: object } }).nodePool;
  assert.deepEqual(nodePool.config.labels, { team: 'web', 'buildfleet.io/pool': 'ci' });
  assert.deepEqual(nodePool.autoscaling, { enabled: true, minNodeCount: 1, maxNodeCount: 4 });
});

test('labels and autoscaling change in place: one updateNodePool with the whole label set, then setNodePoolAutoscaling, then the resize', () => {
  const wanted = gkeSpec({ nodes: 3, gke: { labels: { team: 'web' }, autoscaling: { min: 1, max: 5 } } });
  const plan = planGkeApply(spec, wanted);
  assert.equal(plan.nodePool, gkePoolName(spec), 'the same node pool');
  assert.equal(plan.rotation, undefined);
  assert.deepEqual(plan.inPlace?.settings, ['labels', 'autoscaling']);
  assert.deepEqual(plan.requests, [
    { method: 'updateNodePool', request: { name: pool, labels: { labels: { team: 'web', 'buildfleet.io/pool': 'ci' } } } },
    { method: 'setNodePoolAutoscaling', request: { name: pool, autoscaling: { enabled: true, minNodeCount: 1, maxNodeCount: 5 } } },
    { method: 'setNodePoolSize', request: { name: pool, nodeCount: 3 } },
  ]);
  assert.deepEqual(describeGkePlan(plan, wanted), [
    `update node pool ${gkePoolName(spec)} in place (updateNodePool): labels`,
    `set autoscaling of node pool ${gkePoolName(spec)} to 1-5 nodes (setNodePoolAutoscaling)`,
    `resize node pool ${gkePoolName(spec)} from 2 to 3 node(s)`,
  ]);
});

test('taints, kubelet config and image streaming go in one updateNodePool; bounds removed turn autoscaling off', () => {
  const current = gkeSpec({ nodes: 2, gke: { imageStreaming: true, autoscaling: { min: 1, max: 3 } } });
  const taint = { key: 'startup-taint.cluster-autoscaler.kubernetes.io/other', value: 'x' };
  const wanted = gkeSpec({ nodes: 2, gke: { startupTaint: taint, kubeletConfig: { imageGcHighThresholdPercent: 70, imageGcLowThresholdPercent: 60 } } });
  const plan = planGkeApply(current, wanted);
  assert.deepEqual(plan.inPlace?.settings, ['taints', 'kubeletConfig', 'gcfsConfig', 'autoscaling']);
  assert.deepEqual(plan.requests, [
    {
      method: 'updateNodePool',
      request: {
        name: pool,
        taints: { taints: [{ ...taint, effect: 'NO_SCHEDULE' }] },
        kubeletConfig: { imageGcHighThresholdPercent: 70, imageGcLowThresholdPercent: 60 },
        gcfsConfig: { enabled: false },
      },
    },
    { method: 'setNodePoolAutoscaling', request: { name: pool, autoscaling: { enabled: false } } },
  ]);
  const lines = describeGkePlan(plan, wanted);
  assert.match(lines[0]!, /updateNodePool\): taints, kubeletConfig, gcfsConfig; GKE may re-create the nodes for kubeletConfig and gcfsConfig/);
  assert.match(lines[1]!, /turn autoscaling of node pool ci-[0-9a-f]{6} off/);
  assert.equal(planGkeApply(wanted, wanted).inPlace, undefined, 'nothing changed: no update');
});

test('BUILDFLEET_GKE_ENDPOINT: https keeps credentials; plain http only to loopback, and then none are sent', () => {
  assert.deepEqual(connectionFromEnv({}), {});
  assert.deepEqual(connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'https://container.example.com:8443' }), { apiEndpoint: 'container.example.com', port: 8443, protocol: 'https' });
  assert.deepEqual(connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'http://127.0.0.1:4000' }), { apiEndpoint: '127.0.0.1', port: 4000, protocol: 'http', noCredentials: true });
  assert.deepEqual(connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'http://[::1]:4000' }), { apiEndpoint: '::1', port: 4000, protocol: 'http', noCredentials: true });
  assert.throws(() => connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'http://10.0.0.5:4000' }), /plain http only to an emulator on loopback/);
  assert.throws(() => connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'not a url' }), /is not a URL/);
});
