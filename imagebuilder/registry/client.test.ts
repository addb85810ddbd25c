import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { RegistryServer, freePort } from '../../nodepool/daemons/index.js';
import { sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { RegistryClient, type RegistryOptions } from './index.js';
import { FaultProxy, tinyImage } from '../../test/helpers/registry-fakes.js';
import { errorOf } from '../../test/helpers/assertions.js';

// Needs the docker-registry package (distribution 2.8); .ci/run installs it.
type Seen = { method: string; path: string; status: number };

let registry: RegistryServer;
const clients: RegistryClient[] = [];

before(async () => {
  registry = await RegistryServer.start();
}, { timeout: 30_000 });

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await registry?.stop();
}, { timeout: 30_000 });

function client(options: RegistryOptions = {}, host = registry.host): { client: RegistryClient; seen: Seen[] } {
  const seen: Seen[] = [];
  const c = new RegistryClient(host, {
    retryBaseDelayMs: 10,
    ...options,
    onRequest: (info) => seen.push({ method: info.method, path: new URL(info.url).pathname, status: info.status }),
  });
  clients.push(c);
  return { client: c, seen };
}

const from = (data: Buffer) => async () => Readable.from([data]);

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test('a blob uploads (one streaming PATCH, or chunks), HEADs with its size and GETs back verified', { timeout: 30_000 }, async () => {
  const { client: c, seen } = client();
  await c.ping();
  const data = randomBytes(300_000);
  const stored = await c.uploadBlob('rt/one', from(data), { digest: sha256Digest(data), size: data.length });
  assert.deepEqual(stored, { digest: sha256Digest(data), size: data.length });
  assert.deepEqual(
    seen.filter((s) => s.path.includes('/blobs/uploads/')).map((s) => `${s.method} ${s.status}`),
    ['POST 202', 'PATCH 202', 'PUT 201'],
  );
  assert.equal(await c.hasBlob('rt/one', stored.digest), data.length);
  assert.deepEqual(await readAll(await c.getBlob('rt/one', stored)), data);

  // Chunked: PATCHes with Content-Range (seen through a proxy); the digest is computed while
  // sending (none expected).
  const proxy = await FaultProxy.start(registry.port);
  try {
    const chunked = client({ chunkSize: 64 * 1024 }, proxy.host);
    const other = randomBytes(200_000);
    const result = await chunked.client.uploadBlob('rt/one', from(other));
    assert.equal(result.digest, sha256Digest(other));
    assert.deepEqual(
      proxy.log.filter((entry) => entry.method === 'PATCH').map((entry) => entry.contentRange),
      ['0-65535', '65536-131071', '131072-196607', '196608-199999'],
    );
    assert.deepEqual(await readAll(await c.getBlob('rt/one', result)), other);
  } finally {
    await proxy.stop();
  }

  assert.equal(await c.hasBlob('rt/one', sha256Digest('absent')), undefined);
  await assert.rejects(c.getBlob('rt/one', { digest: sha256Digest('absent'), size: 6 }), errorOf('not-found', /blob sha256:\w+ not found in repository rt\/one on registry 127\.0\.0\.1:\d+/));
});

test('content that does not match the expected digest is not committed', { timeout: 30_000 }, async () => {
  const { client: c, seen } = client();
  const data = Buffer.from('what the caller thinks it sends');
  const claimed = sha256Digest('something else');
  await assert.rejects(c.uploadBlob('rt/mismatch', from(data), { digest: claimed }), errorOf('integrity', /does not match .*not committed/));
  assert.equal(seen.filter((s) => s.method === 'PUT').length, 0, 'no PUT ?digest=');
  assert.equal(seen.filter((s) => s.method === 'DELETE').length, 1, 'the upload session is cancelled');
  assert.equal(await c.hasBlob('rt/mismatch', sha256Digest(data)), undefined);
  assert.equal(seen.filter((s) => s.method === 'POST').length, 1, 'an integrity failure is not retried');
});

test('manifests put and get by tag and by digest', { timeout: 30_000 }, async () => {
  const { client: c } = client();
  const image = tinyImage('manifests');
  await c.uploadBlob('rt/app', from(image.layer), { digest: image.layerDigest });
  await c.uploadBlob('rt/app', from(image.config), { digest: image.configDigest });
  const digest = await c.putManifest('rt/app', 'v1', image.manifest, MediaType.ociManifest);
  assert.equal(digest, image.manifestDigest);

  const byTag = await c.getManifest('rt/app', 'v1');
  assert.deepEqual(byTag.bytes, image.manifest);
  assert.equal(byTag.digest, image.manifestDigest);
  assert.equal(byTag.mediaType, MediaType.ociManifest);
  const byDigest = await c.getManifest('rt/app', image.manifestDigest);
  assert.deepEqual(byDigest.bytes, image.manifest);

  // Pushing by digest works too (no tag).
  const again = await c.putManifest('rt/app', image.manifestDigest, image.manifest, MediaType.ociManifest);
  assert.equal(again, image.manifestDigest);

  await assert.rejects(c.getManifest('rt/app', 'nope'), errorOf('not-found', /manifest nope not found in repository rt\/app on registry 127\.0\.0\.1:\d+: manifest unknown/));
  await assert.rejects(c.getManifest('rt/missing', 'latest'), errorOf('not-found', /repository rt\/missing/));
});

test('a manifest fetched by tag must match the Docker-Content-Digest the registry sends', { timeout: 30_000 }, async () => {
  const { client: direct } = client();
  const image = tinyImage('content-digest');
  await direct.uploadBlob('rt/announced', from(image.layer), { digest: image.layerDigest });
  await direct.uploadBlob('rt/announced', from(image.config), { digest: image.configDigest });
  await direct.putManifest('rt/announced', 'v1', image.manifest, MediaType.ociManifest);
  const proxy = await FaultProxy.start(registry.port);
  try {
    const { client: c } = client({}, proxy.host);
    // The real registry's own header: it matches.
    assert.equal((await c.getManifest('rt/announced', 'v1')).digest, image.manifestDigest);

    const other = sha256Digest('another manifest');
    proxy.rewriteResponseHeader('Docker-Content-Digest', other, (method, url) => method === 'GET' && url.endsWith('/manifests/v1'));
    await assert.rejects(
      c.getManifest('rt/announced', 'v1'),
      errorOf('integrity', new RegExp(`manifest v1 from 127\\.0\\.0\\.1:\\d+/rt/announced: content digest ${image.manifestDigest} does not match the registry's Docker-Content-Digest ${other}`)),
    );
    proxy.rewriteResponseHeader('Docker-Content-Digest', 'sha256:nothex', (method, url) => method === 'GET' && url.endsWith('/manifests/v1'));
    await assert.rejects(c.getManifest('rt/announced', 'v1'), errorOf('integrity', /invalid Docker-Content-Digest "sha256:nothex"/));
    // By digest the reference itself is checked (the header is not needed).
    assert.equal((await c.getManifest('rt/announced', image.manifestDigest)).digest, image.manifestDigest);
  } finally {
    await proxy.stop();
  }
});

test('a manifest naming a blob the registry lacks is refused on PUT', { timeout: 30_000 }, async () => {
  const { client: c, seen } = client();
  const image = tinyImage('missing-layer');
  await c.uploadBlob('rt/partial', from(image.config), { digest: image.configDigest }); // config only, no layer
  await assert.rejects(
    c.putManifest('rt/partial', 'v1', image.manifest, MediaType.ociManifest),
    errorOf('not-found', new RegExp(`PUT manifest rt/partial:v1 failed: registry 127\\.0\\.0\\.1:\\d+ \\(repository rt/partial\\) answered 400 Bad Request: blob unknown to registry \\(${image.layerDigest}\\)`)),
  );
  assert.equal(seen.filter((s) => s.method === 'PUT' && s.path.includes('/manifests/')).length, 1, 'a 400 is not retried');
  await assert.rejects(c.getManifest('rt/partial', 'v1'), errorOf('not-found', /manifest v1 not found/));
});

test('cross-repository mount links a blob without uploading it', { timeout: 30_000 }, async () => {
  const { client: c, seen } = client();
  const data = randomBytes(50_000);
  const { digest } = await c.uploadBlob('team/base', from(data));
  seen.length = 0;
  assert.equal(await c.mountBlob('team/app', digest, 'team/base'), true);
  assert.deepEqual(seen.map((s) => `${s.method} ${s.status}`), ['POST 201']);
  assert.equal(await c.hasBlob('team/app', digest), data.length);
  assert.equal(seen.filter((s) => s.method === 'PATCH').length, 0);

  // A blob the source repository lacks: the registry opens an upload instead, which is cancelled.
  seen.length = 0;
  assert.equal(await c.mountBlob('team/app', sha256Digest('nowhere'), 'team/base'), false);
  assert.deepEqual(seen.map((s) => `${s.method} ${s.status}`), ['POST 202', 'DELETE 204']);
});

test('a blob corrupted in the registry storage fails the GET with an integrity error', { timeout: 30_000 }, async () => {
  const { client: c } = client();
  const data = randomBytes(10_000);
  const { digest, size } = await c.uploadBlob('rt/corrupt', from(data));
  const file = registry.blobFile(digest);
  const stored = await readFile(file);
  assert.deepEqual(stored, data);
  stored[5000] = stored[5000]! ^ 0xff;
  await writeFile(file, stored);
  const stream = await c.getBlob('rt/corrupt', { digest, size });
  await assert.rejects(readAll(stream), errorOf('integrity', new RegExp(`blob ${digest} from 127\\.0\\.0\\.1:\\d+/rt/corrupt: content digest sha256:\\w+ does not match`)));
});

test('a registry that is down gives one network line after bounded retries', { timeout: 30_000 }, async () => {
  const port = await freePort();
  const { client: c, seen } = client({ retries: 2, retryBaseDelayMs: 5 }, `127.0.0.1:${port}`);
  const started = Date.now();
  await assert.rejects(c.getManifest('any/repo', 'latest'), errorOf('network', new RegExp(`^cannot reach registry 127\\.0\\.0\\.1:${port}: connection refused`)));
  assert.deepEqual(seen.map((s) => s.status), [0, 0, 0], 'three attempts');
  await assert.rejects(c.uploadBlob('any/repo', from(Buffer.from('x'))), errorOf('network', /^cannot reach registry/));
  assert.ok(Date.now() - started < 5_000);
});

test('503, 429 with Retry-After and connection resets are retried; a whole upload reopens its source', { timeout: 40_000 }, async () => {
  const proxy = await FaultProxy.start(registry.port);
  try {
    const { client: c, seen } = client({ retries: 3, retryBaseDelayMs: 10 }, proxy.host);
    const image = tinyImage('retries');

    // Two 503s before the POST succeeds; the source is opened only once a session exists.
    proxy.inject({ status: 503 }, 2, (method) => method === 'POST');
    let opens = 0;
    const layer = await c.uploadBlob('rt/retry', async () => {
      opens++;
      return Readable.from([image.layer]);
    }, { digest: image.layerDigest });
    assert.equal(layer.digest, image.layerDigest);
    assert.equal(opens, 1);
    assert.equal(proxy.log.filter((entry) => entry.method === 'POST').length, 3);

    // A reset in the middle of the PATCH: the upload starts over.
    proxy.inject('reset', 1, (method) => method === 'PATCH');
    opens = 0;
    await c.uploadBlob('rt/retry', async () => {
      opens++;
      return Readable.from([image.config]);
    }, { digest: image.configDigest });
    assert.equal(opens, 2);
    await c.putManifest('rt/retry', 'v1', image.manifest, MediaType.ociManifest);

    // 429 with Retry-After: 1 waits about a second even with a 10 ms base delay.
    proxy.inject({ status: 429, retryAfter: 1 }, 1, (method, url) => method === 'GET' && url.includes('/manifests/'));
    const started = Date.now();
    const got = await c.getManifest('rt/retry', 'v1');
    assert.ok(Date.now() - started >= 950, `waited ${Date.now() - started} ms`);
    assert.equal(got.digest, image.manifestDigest);

    // A reset on a GET is retried too.
    proxy.inject('reset', 1, (method, url) => method === 'HEAD' && url.includes('/blobs/'));
    assert.equal(await c.hasBlob('rt/retry', image.layerDigest), image.layer.length);

    // More failures than retries: one line naming the registry and the last status.
    proxy.inject({ status: 503 }, 10, (method) => method === 'GET');
    await assert.rejects(c.getManifest('rt/retry', 'v1'), errorOf('network', /GET manifest rt\/retry:v1 failed: registry 127\.0\.0\.1:\d+ \(repository rt\/retry\) answered 503 Service Unavailable to GET .*injected 503 \(4 attempts\)/));
    const faults = proxy.log.filter((entry) => entry.fault);
    assert.ok(faults.length >= 9, JSON.stringify(faults));
    assert.ok(seen.some((s) => s.status === 0), 'resets are seen as status 0');
  } finally {
    await proxy.stop();
  }
});
