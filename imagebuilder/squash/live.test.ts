import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { buffer } from 'node:stream/consumers';
import { join } from 'node:path';
import { RegistryServer } from '../../nodepool/daemons/index.js';
import { sha256Digest } from '../oci/digest.js';
import { FaultProxy } from '../../test/helpers/registry-fakes.js';
import { closeRegistryClients, registryClientFor } from '../transports/registry.js';
import { openDestination, openSource } from '../transports/index.js';
import { generateImage } from '../../bench/image-generator.js';
import { tempDir } from '../../test/helpers/real.js';
import { LiveCopy } from './live.js';
import { liveChunkBytes, squashImage, type SquashOptions } from './squash.js';

// Needs the docker-registry package (distribution 2.8), as the registry transport tests do.
let registry: RegistryServer;
let proxy: FaultProxy;
let work: { path: string; remove(): Promise<void> };
let layout: string;
const options = { retryBaseDelayMs: 10 };

before(async () => {
  registry = await RegistryServer.start();
  proxy = await FaultProxy.start(Number(registry.host.split(':').pop()));
  work = await tempDir();
  layout = join(work.path, 'input');
  await generateImage(await openDestination(`oci:${layout}:v1`), { layers: 4, totalBytes: 4_000_000, filesPerLayer: 40, format: 'oci' });
}, { timeout: 60_000 });

after(async () => {
  await closeRegistryClients();
  await Promise.allSettled([proxy?.stop(), registry?.stop()]);
  await work?.remove();
}, { timeout: 30_000 });

const chunks = (n: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(64 * 1024, i));

test('a live copy gets every byte the output gets, and a dropped copy never stops the output', async () => {
  const input = chunks(40);
  const copy = new LiveCopy();
  const [copied, written] = await Promise.all([buffer(copy.live), (async () => {
    const out: Buffer[] = [];
    await pipeline(Readable.from(input), copy, new Writable({ write: (c: Buffer, _e, done) => (out.push(c), done()) }));
    return Buffer.concat(out);
  })()]);
  assert.deepEqual(copied, Buffer.concat(input));
  assert.deepEqual(written, Buffer.concat(input));

  const dropped = new LiveCopy();
  dropped.live.once('error', () => {});
  setImmediate(() => dropped.live.destroy(new Error('upload failed')));
  let bytes = 0;
  await pipeline(Readable.from(chunks(200)), dropped, new Writable({ write: (c: Buffer, _e, done) => ((bytes += c.length), done()) }));
  assert.equal(bytes, 200 * 64 * 1024, 'the output is complete although nobody reads the copy');

  const failing = new LiveCopy();
  failing.once('error', () => {});
  const seen = new Promise<Error>((resolve) => failing.live.once('error', resolve));
  failing.destroy(new Error('compressor failed'));
  assert.match((await seen).message, /compressor failed/);
});

test('a blob sent while written is committed under the digest given at its end, and not at all when that fails', async () => {
  const client = registryClientFor(registry.host, options);
  const data = Buffer.concat(chunks(8));
  const sent = await client.uploadBlobWhileWritten('live/ok', Readable.from(chunks(8)), Promise.resolve({ digest: sha256Digest(data), size: data.length }));
  assert.equal(sent.digest, sha256Digest(data));
  assert.equal(await client.hasBlob('live/ok', sent.digest), data.length);

  const other = Buffer.from('not written completely');
  await assert.rejects(client.uploadBlobWhileWritten('live/failed', Readable.from([other]), Promise.reject(new Error('squash failed'))), /squash failed/);
  assert.equal(await client.hasBlob('live/failed', sha256Digest(other)), undefined, 'nothing committed');

  const wrong = Buffer.from('bytes that do not hash to the digest given');
  await assert.rejects(client.uploadBlobWhileWritten('live/wrong', Readable.from([wrong]), Promise.resolve({ digest: sha256Digest(Buffer.from('x')), size: wrong.length })));
  assert.equal(await client.hasBlob('live/wrong', sha256Digest(wrong)), undefined);
});

test('a live upload sends requests of the chunk size its caller gives; the K outputs of a squash share one budget', async () => {
  const client = registryClientFor(proxy.host, options);
  const data = Buffer.concat(chunks(8));
  proxy.log.length = 0;
  const sent = await client.uploadBlobWhileWritten('live/chunked', Readable.from(chunks(8)), Promise.resolve({ digest: sha256Digest(data), size: data.length }), 128 * 1024);
  assert.equal(sent.digest, sha256Digest(data));
  const ranges = proxy.log.filter((r) => r.method === 'PATCH').map((r) => r.contentRange);
  assert.deepEqual(ranges, ['0-131071', '131072-262143', '262144-393215', '393216-524287']);

  assert.equal(liveChunkBytes(1), 16 << 20, 'one output keeps the registry client\'s chunk');
  for (const k of [2, 3, 4, 8, 16]) assert.ok(k * liveChunkBytes(k) <= 16 << 20, `K=${k}: ${k} x ${liveChunkBytes(k)}`);
  assert.equal(liveChunkBytes(64), 1 << 20, 'never below 1 MiB a request');
});

test('squash to a registry streams its output during the write; a failed stream is sent again from the file', async () => {
  const squashTo = async (target: string, extra: SquashOptions = {}) => {
    const destination = await openDestination(target, { registry: options });
    return squashImage(await openSource(`oci:${layout}:v1`), destination, { tmpDir: work.path, ...extra });
  };
  const reference = await squashTo(`oci:${join(work.path, 'reference')}:v1`);

  const streamed = await squashTo(`${proxy.host}/live/squashed:v1`);
  assert.deepEqual(streamed.outputLayers, reference.outputLayers, 'same bytes as a squash to a layout');
  const digest = reference.outputLayers[0]!.digest;
  assert.equal(proxy.log.filter((r) => r.method === 'PUT' && r.url.includes(encodeURIComponent(digest))).length, 1);
  assert.ok(!proxy.log.some((r) => r.method === 'HEAD' && r.url.includes(digest)), 'streamed, not put from the file (which HEADs first)');

  // The streamed PATCH fails: the output is still written, then put again from its file.
  proxy.log.length = 0;
  proxy.inject({ status: 500 }, 1, (method) => method === 'PATCH');
  const retried = await squashTo(`${proxy.host}/live/retried:v1`);
  assert.deepEqual(retried.outputLayers, reference.outputLayers);
  assert.ok(proxy.log.some((r) => r.fault === '500'), 'the fault was hit');
  assert.ok(proxy.log.some((r) => r.method === 'HEAD' && r.url.includes(digest)), 'put again from the file');
  const pulled = await openSource(`${registry.host}/live/retried:v1`, { registry: options });
  const image = await pulled.resolve();
  assert.equal(image.manifest.layers[0]!.digest, reference.outputLayers[0]!.digest);
  const blob = await buffer(await pulled.openBlob(image.manifest.layers[0]!));
  assert.equal(sha256Digest(blob), reference.outputLayers[0]!.digest);
});

test('a squash that fails while its output streams leaves no manifest and commits no output blob', async () => {
  const client = registryClientFor(registry.host, options);
  const reference = await squashImage(await openSource(`oci:${layout}:v1`), await openDestination(`oci:${join(work.path, 'reference-2')}:v1`), { tmpDir: work.path });
  let writes = 0;
  const failing = squashImage(await openSource(`oci:${layout}:v1`), await openDestination(`${registry.host}/live/broken:v1`, { registry: options }), {
    tmpDir: work.path,
    onProgress: (event) => {
      if (event.phase === 'write' && ++writes === 20) throw new Error('stopped in the middle of pass 2');
    },
  });
  await assert.rejects(failing, /stopped in the middle of pass 2/);
  await assert.rejects(client.getManifest('live/broken', 'v1'));
  assert.equal(await client.hasBlob('live/broken', reference.outputLayers[0]!.digest), undefined);
});
