import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePoolSpec } from './pool-spec/pool-spec.js';
import { describePlan, planIsEmpty, planPool, settingsKey, type ExistingNode } from './plan.js';

const spec = (nodes: number, extra: object = {}) => parsePoolSpec({ name: 'ci', nodes, disks: { runtime: '1G', workload: '2G' }, images: ['127.0.0.1:5000/build:1'], ...extra });
const images = ['127.0.0.1:5000/build@sha256:aa'];
const node = (id: string, phase: ExistingNode['phase'] = 'Ready', over: Partial<ExistingNode> = {}): ExistingNode => ({
  id,
  phase,
  runtimeDiskBytes: 1024 ** 3,
  workloadDiskBytes: 2 * 1024 ** 3,
  settingsKey: settingsKey(spec(1), images),
  images,
  ...over,
});

test('a new pool creates every node', () => {
  const plan = planPool(spec(2), undefined, images);
  assert.equal(plan.createPool, true);
  assert.deepEqual(plan.add, ['n1', 'n2']);
  assert.deepEqual(describePlan(plan, spec(2)), ['create pool ci (provider local)', 'create node ci-n1 (runtime disk 1 GiB, workload disk 2 GiB)', 'create node ci-n2 (runtime disk 1 GiB, workload disk 2 GiB)']);
});

test('scale up numbers new nodes after the highest ever used', () => {
  const plan = planPool(spec(3), [node('n1'), node('n4')], images);
  assert.deepEqual(plan.add, ['n5']);
  assert.deepEqual(plan.keep, ['n1', 'n4']);
  assert.equal(plan.createPool, false);
});

test('scale down removes nodes that are not serving first, then the newest', () => {
  const plan = planPool(spec(1), [node('n1'), node('n2'), node('n3', 'Pulling')], images);
  assert.deepEqual(plan.remove, ['n2', 'n3']);
  assert.deepEqual(plan.keep, ['n1']);
  assert.deepEqual(planPool(spec(0), [node('n1')], images).remove, ['n1']);
});

test('a spec that matches is a plan with nothing to do', () => {
  const plan = planPool(spec(2), [node('n1'), node('n2')], images);
  assert.ok(planIsEmpty(plan));
  assert.deepEqual(describePlan(plan, spec(2)), ['pool ci matches its spec: nothing to do']);
});

test('new thresholds update nodes in place; new images roll them; new disk sizes replace them', () => {
  const changed = planPool(spec(2, { probe: { failureThreshold: 5 } }), [node('n1'), node('n2')], images);
  assert.deepEqual(changed.update, ['n1', 'n2']);
  assert.deepEqual(changed.roll, []);
  assert.deepEqual(changed.add, []);
  const newImage = planPool(spec(2), [node('n1'), node('n2')], ['127.0.0.1:5000/build@sha256:bb']);
  assert.deepEqual(newImage.roll, ['n1', 'n2']);
  assert.deepEqual(newImage.update, []);
  assert.deepEqual(newImage.add, [], 'the roll makes the replacements, surge first');
  assert.ok(!planIsEmpty(newImage));
  assert.match(describePlan(newImage, spec(2)).join('\n'), /roll node ci-n1 to the new images \(a new node Ready first, then this one drained and deleted\)/);
  const bigger = planPool(spec(2), [node('n1'), node('n2', 'Ready', { runtimeDiskBytes: 512 * 1024 ** 2 })], images);
  assert.deepEqual(bigger.replace, ['n2']);
  assert.deepEqual(bigger.remove, ['n2']);
  assert.deepEqual(bigger.add, ['n3']);
  assert.match(describePlan(bigger, spec(2)).join('\n'), /drain and delete node ci-n2 \(disks changed: replaced\)/);
});

test('nodes being removed do not count', () => {
  const plan = planPool(spec(1), [node('n1', 'Removing')], images);
  assert.deepEqual(plan.add, ['n2']);
  assert.deepEqual(plan.remove, []);
});

test('disks.layout: a single-disk node (no workload disk of its own) is kept by a single spec and replaced by a dual one, and back', () => {
  const single = spec(1, { disks: { runtime: '1G', workload: '2G', layout: 'single' } });
  const singleNode = node('n1', 'Ready', { workloadDiskBytes: 0, settingsKey: settingsKey(single, images) });
  assert.deepEqual(planPool(single, [singleNode], images).keep, ['n1']);
  assert.deepEqual(planPool(spec(1), [singleNode], images).remove, ['n1']);
  assert.deepEqual(planPool(single, [node('n1')], images).remove, ['n1']);
});

test('scale-down with new images removes nodes on the old images first', () => {
  const next = ['127.0.0.1:5000/build@sha256:bb'];
  const plan = planPool(spec(2), [node('n1'), node('n2', 'Ready', { images: next }), node('n3', 'Ready', { images: next })], next);
  assert.deepEqual(plan.remove, ['n1']);
  assert.deepEqual(plan.roll, []);
});

test('a new toolchain cache block (or a changed one) updates nodes in place; none keeps the key nodes had', () => {
  const cache = { maxSize: '1G', toolchains: ['node@20.11.0'] };
  assert.equal(settingsKey(spec(1), images), node('n1').settingsKey);
  assert.deepEqual(planPool(spec(1, { cache }), [node('n1')], images).update, ['n1']);
  const cached = node('n1', 'Ready', { settingsKey: settingsKey(spec(1, { cache }), images) });
  assert.deepEqual(planPool(spec(1, { cache }), [cached], images).keep, ['n1']);
  assert.deepEqual(planPool(spec(1, { cache: { ...cache, toolchains: ['node@22.1.0'] } }), [cached], images).update, ['n1']);
});
