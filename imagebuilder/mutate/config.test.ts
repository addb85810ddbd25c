import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MediaType } from '../oci/media-types.js';
import { sha256Digest } from '../oci/digest.js';
import type { ImageConfig } from '../oci/schemas.js';
import { configBlob, replaceLayers, withCreated, withLabels } from './config.js';
import { imageTime } from './time.js';

const d = (n: number) => 'sha256:' + String(n).repeat(64).slice(0, 64);

const original: ImageConfig = {
  architecture: 'amd64',
  os: 'linux',
  config: { Env: ['A=1'], Labels: { keep: 'me' } },
  rootfs: { type: 'layers', diff_ids: [d(1), d(2), d(3)] },
  history: [{ created_by: 'one' }, { created_by: 'env', empty_layer: true }, { created_by: 'two' }, { created_by: 'three' }],
};

test('replaceLayers keeps the lower layers, marks the replaced ones empty and appends the new ones', () => {
  const config = replaceLayers(original, 1, [{ diffId: d(7), history: { created_by: 'new' } }]);
  assert.deepEqual(config.rootfs.diff_ids, [d(1), d(7)]);
  assert.deepEqual(config.history, [
    { created_by: 'one' },
    { created_by: 'env', empty_layer: true },
    { created_by: 'two', empty_layer: true },
    { created_by: 'three', empty_layer: true },
    { created_by: 'new' },
  ]);
  assert.deepEqual(original.rootfs.diff_ids, [d(1), d(2), d(3)], 'the original is not changed');
});

test('config edits keep the original key order, so the same edits give the same bytes', () => {
  const { created: _, ...undated } = { ...original, created: 'x' };
  const edited = replaceLayers(withLabels(withCreated(undated, imageTime(0)), { added: 'label' }), 0, []);
  assert.deepEqual(Object.keys(edited), ['architecture', 'os', 'config', 'rootfs', 'history', 'created']);
  assert.equal(edited.created, '1970-01-01T00:00:00.000Z');
  assert.deepEqual(edited.config?.Labels, { keep: 'me', added: 'label' });
  assert.equal(withCreated(undated, undefined).created, undefined);
  const blob = configBlob(edited, 'oci');
  assert.deepEqual(blob.descriptor, { mediaType: MediaType.ociConfig, digest: sha256Digest(blob.bytes), size: blob.bytes.length });
  assert.equal(blob.bytes.toString(), JSON.stringify(edited));
});
