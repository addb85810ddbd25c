import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gzipSync } from 'node:zlib';
import { MediaType } from '../oci/media-types.js';
import { sha256Digest } from '../oci/digest.js';
import type { ResolvedImage } from '../transports/types.js';
import { buildManifest, planLayers } from './copy.js';
import { decompressor, pipeOn, recompress } from './codecs.js';

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

test('buildManifest writes the target format and drops annotations Docker schema2 lacks', () => {
  const layer = { mediaType: MediaType.ociLayerGzip, digest: d(1), size: 5, annotations: { a: 'b' } };
  const oci = JSON.parse(buildManifest('oci', { mediaType: MediaType.ociConfig, digest: d(2), size: 3 }, [layer]).toString());
  assert.equal(oci.mediaType, MediaType.ociManifest);
  assert.deepEqual(oci.layers[0].annotations, { a: 'b' });
  const docker = JSON.parse(buildManifest('docker', { mediaType: MediaType.dockerConfig, digest: d(2), size: 3 }, [{ ...layer, mediaType: MediaType.dockerLayerGzip }]).toString());
  assert.equal(docker.mediaType, MediaType.dockerManifest);
  assert.equal(docker.layers[0].annotations, undefined);
});

test('recompress round-trips gzip and zstd and is deterministic', async () => {
  const data = Buffer.from('layer bytes '.repeat(10_000));
  const gz1 = await buffer(recompress(Readable.from([data]), 'none', 'gzip'));
  const gz2 = await buffer(recompress(Readable.from([data]), 'none', 'gzip'));
  assert.equal(sha256Digest(gz1), sha256Digest(gz2), 'same bytes in, same blob out');
  assert.deepEqual(await buffer(recompress(Readable.from([gz1]), 'gzip', 'none')), data);
  const zst = await buffer(recompress(Readable.from([gzipSync(data)]), 'gzip', 'zstd'));
  assert.deepEqual([...zst.subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd]);
  assert.deepEqual(await buffer(recompress(Readable.from([zst]), 'zstd', 'none')), data);
});

test('recompress fails the stream on corrupt input', async () => {
  await assert.rejects(buffer(recompress(Readable.from([Buffer.from('not gzip at all')]), 'gzip', 'none')), /incorrect header|invalid/i);
  await assert.rejects(buffer(recompress(Readable.from([Buffer.from('not zstd at all')]), 'zstd', 'none')), /zstd/);
});

test('tearing down the end of a chain stops everything feeding it, a zstd child included', { timeout: 20_000 }, async () => {
  const compressed = await buffer(recompress(Readable.from([Buffer.alloc(20 * 1024 * 1024, 'layer ')]), 'none', 'zstd'));
  const source = Readable.from([compressed]);
  const zstd = pipeOn(source, decompressor('zstd'));
  const end = pipeOn(zstd, new PassThrough());
  await once(end, 'readable');
  end.destroy();
  await once(zstd, 'close'); // before the fix the zstd child stayed blocked on a full pipe: no close, a hang
  assert.ok(source.destroyed, 'the source is stopped too');
});
