import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gzipSync } from 'node:zlib';
import { sha256Digest } from '../oci/digest.js';
import { decompressor, recompress } from './codecs.js';
import { pipeOn } from './streams.js';

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
