import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MediaType } from '../oci/media-types.js';
import { buildManifest, manifestFormatFor } from './manifest.js';

const d = (n: number) => 'sha256:' + String(n).repeat(64).slice(0, 64);

test('buildManifest writes the target format and drops annotations Docker schema2 lacks', () => {
  const layer = { mediaType: MediaType.ociLayerGzip, digest: d(1), size: 5, annotations: { a: 'b' } };
  const oci = JSON.parse(buildManifest('oci', { mediaType: MediaType.ociConfig, digest: d(2), size: 3 }, [layer]).toString());
  assert.equal(oci.mediaType, MediaType.ociManifest);
  assert.deepEqual(oci.layers[0].annotations, { a: 'b' });
  const docker = JSON.parse(buildManifest('docker', { mediaType: MediaType.dockerConfig, digest: d(2), size: 3 }, [{ ...layer, mediaType: MediaType.dockerLayerGzip }]).toString());
  assert.equal(docker.mediaType, MediaType.dockerManifest);
  assert.equal(docker.layers[0].annotations, undefined);
});

test('manifestFormatFor keeps the source format only where the destination takes either', () => {
  assert.equal(manifestFormatFor('keep', MediaType.ociManifest), 'oci');
  assert.equal(manifestFormatFor('keep', MediaType.dockerManifest), 'docker');
  assert.equal(manifestFormatFor('docker', MediaType.ociManifest), 'docker');
});
