import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { RegistryServer } from '../../daemons/index.js';
import { BuildfleetError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import { parseReference, type RegistryReference } from '../oci/reference.js';
import { sha256Digest } from '../oci/digest.js';
import { RegistryClient, type RegistryOptions } from '../registry/index.js';
import { tinyImage } from '../../test/helpers/registry-fakes.js';
import { closeRegistryClients, openRegistryDestination, openRegistrySource, registryClientFor } from './registry.js';
import { amd64Arm64Index } from '../../test/helpers/transports.js';

// Needs the docker-registry package (distribution 2.8); .ci/run installs it.
let registry: RegistryServer;
const seen: Array<{ method: string; path: string }> = [];
const options: RegistryOptions = { retryBaseDelayMs: 10, onRequest: (i) => seen.push({ method: i.method, path: new URL(i.url).pathname }) };

before(async () => {
  registry = await RegistryServer.start();
}, { timeout: 30_000 });

after(async () => {
  await closeRegistryClients();
  await registry?.stop();
}, { timeout: 30_000 });

const ref = (text: string) => parseReference(`${registry.host}/${text}`) as RegistryReference;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** What a copy does: blobs first (skipping present ones), manifest last, commit. */
async function push(text: string, image: ReturnType<typeof tinyImage>, mountFrom?: RegistryReference) {
  const destination = await openRegistryDestination(ref(text), options);
  const blobs = [
    { data: image.layer, descriptor: { mediaType: MediaType.ociLayer, digest: image.layerDigest, size: image.layer.length } },
    { data: image.config, descriptor: { mediaType: MediaType.ociConfig, digest: image.configDigest, size: image.config.length } },
  ];
  for (const { data, descriptor } of blobs) {
    if (await destination.hasBlob(descriptor, mountFrom)) continue;
    const stored = await destination.putBlob(async () => Readable.from([data]), descriptor);
    assert.deepEqual(stored, descriptor);
  }
  const digest = await destination.putManifest(image.manifest, MediaType.ociManifest);
  await destination.commit();
  return digest;
}

test('an image pushed through the destination resolves through the source; a second push uploads nothing', { timeout: 30_000 }, async () => {
  const destination = await openRegistryDestination(ref('app/web:v1'), options);
  assert.deepEqual(destination.preferences, { manifestFormat: 'keep', layerCompression: 'gzip' });
  const image = tinyImage('web');
  assert.equal(await push('app/web:v1', image), image.manifestDigest);

  const source = await openRegistrySource(ref('app/web:v1'), options);
  const resolved = await source.resolve();
  assert.equal(resolved.manifestDigest, image.manifestDigest);
  assert.deepEqual(resolved.manifestBytes, image.manifest);
  assert.equal(resolved.manifestMediaType, MediaType.ociManifest);
  assert.deepEqual(resolved.configBytes, image.config);
  assert.deepEqual(resolved.config.config?.Env, ['SEED=web']);
  assert.equal(resolved.index, undefined);
  assert.deepEqual(await readAll(await source.openBlob(resolved.manifest.layers[0]!)), image.layer);
  await source.close();

  seen.length = 0;
  await push('app/web:v1', image);
  assert.deepEqual(seen.map((s) => s.method).sort(), ['HEAD', 'HEAD', 'PUT'], 'only HEADs and the manifest PUT');

  // A digest-only reference resolves, and is where a digest-only destination PUTs.
  const byDigest = await openRegistrySource(ref(`app/web@${image.manifestDigest}`), options);
  assert.equal((await byDigest.resolve()).manifestDigest, image.manifestDigest);
  const digestDestination = await openRegistryDestination(ref(`app/other@${image.manifestDigest}`), options);
  await assert.rejects(digestDestination.putManifest(Buffer.from('{}'), MediaType.ociManifest), (err: unknown) => err instanceof BuildfleetError && err.kind === 'integrity');
});

test('the destination mounts from another repository of the same registry instead of uploading', { timeout: 30_000 }, async () => {
  const image = tinyImage('mounted');
  await push('lib/base:v1', image);
  seen.length = 0;
  await push('app/child:v1', image, ref('lib/base:v1'));
  assert.equal(seen.filter((s) => s.method === 'PATCH').length, 0, 'no upload');
  assert.equal(seen.filter((s) => s.method === 'POST').length, 2, 'two mounts');
  const source = await openRegistrySource(ref('app/child:v1'), options);
  assert.equal((await source.resolve()).manifestDigest, image.manifestDigest);

  // Another registry host is never asked to mount: the destination uploads.
  const elsewhere = parseReference('127.0.0.2:1/lib/base:v1');
  const fresh = tinyImage('not-mountable');
  seen.length = 0;
  await push('app/lonely:v1', fresh, elsewhere as RegistryReference);
  assert.ok(seen.every((s) => !s.path.includes('127.0.0.2')));
  assert.equal(seen.filter((s) => s.method === 'PATCH').length, 2);
});

test('putBlob rejects content that does not match its digest', { timeout: 30_000 }, async () => {
  const destination = await openRegistryDestination(ref('app/bad:v1'), options);
  await assert.rejects(
    destination.putBlob(async () => Readable.from([Buffer.from('actual')]), { mediaType: MediaType.ociLayer, digest: sha256Digest('claimed') }),
    (err: unknown) => err instanceof BuildfleetError && err.kind === 'integrity',
  );
  await destination.abort();
  await destination.abort();
});

test('a multi-arch index resolves to the requested platform and keeps the index', { timeout: 30_000 }, async () => {
  const client = new RegistryClient(registry.host, options);
  try {
    const amd = tinyImage('amd', { os: 'linux', architecture: 'amd64' });
    const arm = tinyImage('arm', { os: 'linux', architecture: 'arm64' });
    for (const image of [amd, arm]) {
      await client.uploadBlob('multi/app', async () => Readable.from([image.layer]));
      await client.uploadBlob('multi/app', async () => Readable.from([image.config]));
      await client.putManifest('multi/app', image.manifestDigest, image.manifest, MediaType.ociManifest);
    }
    const index = amd64Arm64Index({ digest: amd.manifestDigest, size: amd.manifest.length }, { digest: arm.manifestDigest, size: arm.manifest.length });
    const indexDigest = await client.putManifest('multi/app', 'latest', index, MediaType.ociIndex);

    const source = await openRegistrySource(ref('multi/app'), options);
    const resolved = await source.resolve({ platform: { os: 'linux', architecture: 'arm64' } });
    assert.equal(resolved.manifestDigest, arm.manifestDigest);
    assert.equal(resolved.config.architecture, 'arm64');
    assert.equal(resolved.index?.digest, indexDigest);
    assert.equal(resolved.index?.mediaType, MediaType.ociIndex);
    assert.deepEqual(resolved.index?.bytes, index);
    assert.equal(resolved.index?.index.manifests.length, 2);
    await assert.rejects(source.resolve({ platform: { os: 'linux', architecture: 's390x' } }), (err: unknown) => err instanceof BuildfleetError && err.kind === 'not-found' && /linux\/amd64, linux\/arm64\/v8/.test(err.message));
  } finally {
    await client.close();
  }
});

test('sources and destinations on one host with the same options share one client', () => {
  assert.equal(registryClientFor(registry.host, options), registryClientFor(registry.host, { ...options }));
  assert.notEqual(registryClientFor(registry.host, options), registryClientFor(registry.host, { ...options, onRequest: () => {} }));
  assert.equal(registryClientFor(registry.host, {}), registryClientFor(registry.host, {}));
});
