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

test('a boot disk change is a rotation (create the new pool, delete the old); label changes are named as not applied', () => {
  const bigger = gkeSpec({ nodes: 3, gke: { bootDisk: { type: 'pd-balanced', sizeGb: 200 } } });
  const plan = planGkeApply(spec, bigger);
  assert.deepEqual(plan.requests.map((r) => r.method), ['createNodePool', 'deleteNodePool']);
  assert.equal(plan.rotation?.newPool, gkePoolName(bigger));
  const relabelled = planGkeApply(spec, gkeSpec({ nodes: 2, gke: { labels: { team: 'web' } } }));
  assert.deepEqual([relabelled.requests, relabelled.notApplied], [[], ['labels']]);
  assert.match(describeGkePlan(relabelled, spec).join('\n'), /not applied .*labels/);
});

test('BUILDFLEET_GKE_ENDPOINT: https keeps credentials; plain http only to loopback, and then none are sent', () => {
  assert.deepEqual(connectionFromEnv({}), {});
  assert.deepEqual(connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'https://container.example.com:8443' }), { apiEndpoint: 'container.example.com', port: 8443, protocol: 'https' });
  assert.deepEqual(connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'http://127.0.0.1:4000' }), { apiEndpoint: '127.0.0.1', port: 4000, protocol: 'http', noCredentials: true });
  assert.deepEqual(connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'http://[::1]:4000' }), { apiEndpoint: '::1', port: 4000, protocol: 'http', noCredentials: true });
  assert.throws(() => connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'http://10.0.0.5:4000' }), /plain http only to an emulator on loopback/);
  assert.throws(() => connectionFromEnv({ BUILDFLEET_GKE_ENDPOINT: 'not a url' }), /is not a URL/);
});
