import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch } from './patch.js';

const node = () => ({
  metadata: { name: 'n1', labels: { a: '1', b: '2' }, finalizers: ['x'] },
  spec: { taints: [{ key: 't1', effect: 'NoSchedule' }, { key: 't2', effect: 'NoExecute' }] },
  status: { conditions: [{ type: 'Ready', status: 'True' }, { type: 'RuntimeUnhealthy', status: 'False', reason: 'Ok' }] },
});

test('JSON patch: add, remove, replace, test; a failed test changes nothing', () => {
  const patched = applyJsonPatch(node(), [
    { op: 'add', path: '/spec/unschedulable', value: true },
    { op: 'test', path: '/spec/taints/0/key', value: 't1' },
    { op: 'test', path: '/spec/taints/0', value: { effect: 'NoSchedule', key: 't1' } },
    { op: 'remove', path: '/spec/taints/0' },
    { op: 'replace', path: '/metadata/labels/a', value: '9' },
    { op: 'add', path: '/metadata/labels/c~1d', value: '3' },
  ]);
  assert.deepEqual(patched.spec, { unschedulable: true, taints: [{ key: 't2', effect: 'NoExecute' }] });
  assert.deepEqual(patched.metadata.labels, { a: '9', b: '2', 'c/d': '3' });
  const original = node();
  assert.throws(() => applyJsonPatch(original, [{ op: 'remove', path: '/spec/taints/0' }, { op: 'test', path: '/spec/taints/0/key', value: 't1' }]), /test failed/);
  assert.equal(original.spec.taints.length, 2);
  assert.throws(() => applyJsonPatch(node(), [{ op: 'remove', path: '/spec/nothing' }]), /does not exist/);
});

test('merge patch: null deletes a key, lists are replaced whole', () => {
  const patched = applyMergePatch(node(), { metadata: { labels: { a: null, c: '3' } }, spec: { taints: [{ key: 'only', effect: 'NoSchedule' }] } });
  assert.deepEqual(patched.metadata.labels, { b: '2', c: '3' });
  assert.deepEqual(patched.spec.taints, [{ key: 'only', effect: 'NoSchedule' }]);
});

test('strategic merge patch: conditions merge by type, $patch: delete removes one, taints (no strategy) are replaced, finalizers merge as a set', () => {
  const patched = applyStrategicMergePatch(node(), {
    metadata: { finalizers: ['y', 'x'], labels: { b: null } },
    spec: { unschedulable: true, taints: [{ key: 't2', effect: 'NoExecute' }] },
    status: { conditions: [{ type: 'RuntimeUnhealthy', status: 'True', reason: 'ProbeTimeout' }, { type: 'Ready', $patch: 'delete' }, { type: 'New', status: 'False' }], $setElementOrder: [] },
  });
  assert.deepEqual(patched.status.conditions, [{ type: 'RuntimeUnhealthy', status: 'True', reason: 'ProbeTimeout' }, { type: 'New', status: 'False' }]);
  assert.deepEqual(patched.spec, { unschedulable: true, taints: [{ key: 't2', effect: 'NoExecute' }] });
  assert.deepEqual(patched.metadata.finalizers, ['x', 'y']);
  assert.deepEqual(patched.metadata.labels, { a: '1' });
});
