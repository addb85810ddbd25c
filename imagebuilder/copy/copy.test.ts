import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MediaType } from '../oci/media-types.js';
import type { ResolvedImage } from '../transports/types.js';
import { planLayers } from './copy.js';

const d = (n: number) => 'sha256:' + String(n).repeat(64).slice(0, 64);

function image(mediaTypes: string[], manifestMediaType: string = MediaType.dockerManifest): ResolvedImage {
  return {
    manifest: {
      schemaVersion: 2,
      mediaType: manifestMediaType,
      config: { mediaType: MediaType.dockerConfig, digest: d(9), size: 10 },
      layers: mediaTypes.map((mediaType, i) => ({ mediaType, digest: d(i), size: 100 })),
    },
    manifestBytes: Buffer.from('{}'),
    manifestDigest: d(8),
    manifestMediaType,
    config: { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: mediaTypes.map((_, i) => d(i + 1)) } },
    configBytes: Buffer.from('{}'),
  };
}

test('plan: registry keeps compressed layers and gzips plain ones', () => {
  const plan = planLayers(image([MediaType.dockerLayerGzip, MediaType.dockerLayer, MediaType.dockerLayerZstd]), { manifestFormat: 'keep', layerCompression: 'gzip' });
  assert.equal(plan.format, 'docker');
  assert.deepEqual(plan.layers.map((l) => [l.from, l.to, l.mediaType]), [
    ['gzip', 'gzip', MediaType.dockerLayerGzip],
    ['none', 'gzip', MediaType.dockerLayerGzip],
    ['zstd', 'zstd', MediaType.dockerLayerZstd],
  ]);
});

test('plan: archives decompress and OCI layouts convert media types', () => {
  const archive = planLayers(image([MediaType.ociLayerGzip], MediaType.ociManifest), { manifestFormat: 'docker', layerCompression: 'none' });
  assert.deepEqual(archive.layers.map((l) => [l.from, l.to, l.mediaType, l.diffId]), [['gzip', 'none', MediaType.dockerLayer, d(1)]]);
  const layout = planLayers(image([MediaType.dockerLayerGzip]), { manifestFormat: 'oci', layerCompression: 'keep' });
  assert.equal(layout.format, 'oci');
  assert.deepEqual(layout.layers.map((l) => l.mediaType), [MediaType.ociLayerGzip]);
});
