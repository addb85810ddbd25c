import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePoolSpec } from '../pool-spec/pool-spec.js';
import { apiFailureOf, isOperationConflict } from './errors.js';
import { clusterOf, createNodePoolRequest, deleteNodePoolRequest, getOperationRequest, gkePoolName, setNodePoolSizeRequest } from './requests.js';

// Pure: the gke block of the pool spec and the container.v1 requests built from it.

const images = ['us-docker.pkg.dev/p/ci/build:1'];
const where = { project: 'build-proj', location: 'us-central1-a', cluster: 'builds' };

test('a gke spec gets defaults: pd-balanced boot disk, one raw-block local SSD, the startup taint, GC thresholds', () => {
  const spec = parsePoolSpec({ name: 'ci', provider: 'gke', nodes: 3, images, gke: where });
  assert.deepEqual(spec.gke, {
    ...where,
    machineType: 'n2-standard-8',
    imageType: 'COS_CONTAINERD',
    bootDisk: { type: 'pd-balanced', sizeGb: 100 },
    workloadDevice: { type: 'localNvmeSsdBlock', count: 1 },
    labels: {},
    kubeletConfig: { imageGcHighThresholdPercent: 85, imageGcLowThresholdPercent: 80 },
    startupTaint: { key: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull', value: 'true' },
    imageStreaming: false,
  });
  const request = createNodePoolRequest(spec);
  assert.deepEqual(request, {
    method: 'createNodePool',
    request: {
      parent: 'projects/build-proj/locations/us-central1-a/clusters/builds',
      nodePool: {
        name: gkePoolName(spec),
        initialNodeCount: 3,
        config: {
          machineType: 'n2-standard-8',
          imageType: 'COS_CONTAINERD',
          bootDisk: { diskType: 'pd-balanced', sizeGb: 100 },
          localNvmeSsdBlockConfig: { localSsdCount: 1 },
          labels: { 'buildfleet.io/pool': 'ci' },
          taints: [{ key: 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull', value: 'true', effect: 'NO_SCHEDULE' }],
          kubeletConfig: { imageGcHighThresholdPercent: 85, imageGcLowThresholdPercent: 80 },
        },
      },
    },
  });
});

test('the older localSsdCount, a secondary boot disk by path, image streaming, autoscaling', () => {
  const spec = parsePoolSpec({
    name: 'ci', provider: 'gke', nodes: 2, images,
    gke: { ...where, workloadDevice: { type: 'localSsd', count: 2 }, secondaryBootDisk: 'global/images/ci-cache', imageStreaming: true, autoscaling: { min: 0, max: 5 } },
  });
  const { nodePool } = createNodePoolRequest(spec).request as { nodePool: Record<string, any> };
  assert.equal(nodePool.config.localSsdCount, 2);
  assert.equal(nodePool.config.localNvmeSsdBlockConfig, undefined);
  assert.deepEqual(nodePool.config.secondaryBootDisks, [{ mode: 'CONTAINER_IMAGE_CACHE', diskImage: 'global/images/ci-cache' }]);
  assert.deepEqual(nodePool.config.gcfsConfig, { enabled: true });
  assert.deepEqual(nodePool.autoscaling, { enabled: true, minNodeCount: 0, maxNodeCount: 5 });
});

test('resize, delete and poll requests name the pool and the operation by their full paths', () => {
  const spec = parsePoolSpec({ name: 'ci', provider: 'gke', nodes: 1, images, gke: where });
  const gke = spec.gke!;
  assert.deepEqual(setNodePoolSizeRequest(gke, 'ci-abc123', 5), { method: 'setNodePoolSize', request: { name: 'projects/build-proj/locations/us-central1-a/clusters/builds/nodePools/ci-abc123', nodeCount: 5 } });
  assert.deepEqual(deleteNodePoolRequest(gke, 'ci-abc123'), { method: 'deleteNodePool', request: { name: 'projects/build-proj/locations/us-central1-a/clusters/builds/nodePools/ci-abc123' } });
  assert.deepEqual(getOperationRequest(gke, 'operation-17'), { method: 'getOperation', request: { name: 'projects/build-proj/locations/us-central1-a/operations/operation-17' } });
  assert.equal(clusterOf(setNodePoolSizeRequest(gke, 'x', 1)), 'projects/build-proj/locations/us-central1-a/clusters/builds');
});

test('the pool name changes exactly when a setting fixed at creation changes', () => {
  const base = { name: 'ci', provider: 'gke', nodes: 1, images } as const;
  const name = (gke: object) => gkePoolName(parsePoolSpec({ ...base, gke: { ...where, ...gke } }));
  assert.match(name({}), /^ci-[0-9a-f]{6}$/);
  assert.equal(name({ labels: { team: 'x' }, kubeletConfig: { imageGcHighThresholdPercent: 70, imageGcLowThresholdPercent: 50 } }), name({}), 'updatable settings keep the pool');
  for (const changed of [{ bootDisk: { sizeGb: 200 } }, { workloadDevice: { count: 2 } }, { secondaryBootDisk: 'img-2' }, { machineType: 'n2-standard-16' }]) {
    assert.notEqual(name(changed), name({}), JSON.stringify(changed));
  }
  assert.ok(gkePoolName(parsePoolSpec({ ...base, name: 'a'.repeat(32), gke: where })).length <= 40, "within GKE's 40 characters");
});

test('a bad gke spec fails with one line naming the field', () => {
  const cases: Array<[object, RegExp]> = [
    [{ provider: 'gke' }, /^pool spec: gke: required when provider is gke/],
    [{ gke: where }, /^pool spec: gke: only for provider: gke/],
    [{ provider: 'gke', gke: { ...where, project: 'X' } }, /^pool spec: gke\.project: a GCP project id/],
    [{ provider: 'gke', gke: { ...where, location: 'mars' } }, /^pool spec: gke\.location: a region/],
    [{ provider: 'gke', gke: { ...where, startupTaint: { key: 'buildfleet/prepull' } } }, /^pool spec: gke\.startupTaint\.key: must start with startup-taint\.cluster-autoscaler\.kubernetes\.io\//],
    [{ provider: 'gke', gke: { ...where, kubeletConfig: { imageGcHighThresholdPercent: 60, imageGcLowThresholdPercent: 70 } } }, /^pool spec: gke\.kubeletConfig\.imageGcLowThresholdPercent: must be below/],
    [{ provider: 'gke', gke: { ...where, autoscaling: { min: 3, max: 1 } } }, /^pool spec: gke\.autoscaling\.min: must not exceed max/],
    [{ provider: 'gke', nodes: 9, gke: { ...where, autoscaling: { min: 1, max: 4 } } }, /^pool spec: nodes: must be within gke\.autoscaling \(1-4\)/],
    [{ provider: 'gke', gke: { ...where, workloadDevice: { type: 'ephemeral' } } }, /^pool spec: gke\.workloadDevice\.type: /],
    [{ provider: 'gke', gke: { ...where, bootDisk: { sizeGb: 5 } } }, /^pool spec: gke\.bootDisk\.sizeGb: /],
    [{ provider: 'gke', gke: { ...where, zone: 'x' } }, /^pool spec: gke: Unrecognized key: "zone"/],
    [{ provider: 'gke', gke: { ...where, bootDisk: { type: 'pd-ssd', provisionedIops: 5000 } } }, /^pool spec: gke\.bootDisk\.type: provisionedIops and provisionedThroughput are for hyperdisk types only/],
  ];
  for (const [extra, pattern] of cases) {
    assert.throws(() => parsePoolSpec({ name: 'ci', nodes: 1, images, ...extra }), (err: Error) => pattern.test(err.message) && !err.message.includes('\n'), JSON.stringify(extra));
  }
});

test('API failures are read from the REST body, a gRPC code or a dead socket', () => {
  const rest = Object.assign(new Error(JSON.stringify({ error: { code: 400, status: 'FAILED_PRECONDITION', message: 'Cluster is running incompatible operation operation-1.' } })), { status: 400 });
  assert.deepEqual(apiFailureOf(rest), { status: 'FAILED_PRECONDITION', message: 'Cluster is running incompatible operation operation-1.' });
  assert.ok(isOperationConflict(apiFailureOf(rest)!));
  assert.deepEqual(apiFailureOf(Object.assign(new Error('7 PERMISSION_DENIED: no'), { code: 7, details: 'no' })), { status: 'PERMISSION_DENIED', message: 'no' });
  assert.deepEqual(apiFailureOf(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })), { status: 'UNAVAILABLE', message: 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1' });
  assert.deepEqual(apiFailureOf(Object.assign(new Error('Too Many Requests'), { status: 429 })), { status: 'RESOURCE_EXHAUSTED', message: 'Too Many Requests' });
  assert.equal(apiFailureOf(new TypeError('x is undefined')), undefined, 'a bug is not an API failure');
});
