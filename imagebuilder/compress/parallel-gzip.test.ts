import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gunzipSync, gzipSync } from 'node:zlib';
import { createCipheriv } from 'node:crypto';
import { execa } from 'execa';
import { parallelGzip, parallelGzipSync, type GzipEngine } from './parallel-gzip.js';
import { native } from '../native/index.js';

/** Half random, half repetitive text: compressible like a real layer, not trivially so. */
function sample(size: number): Buffer {
  const random = createCipheriv('aes-128-ctr', Buffer.alloc(16, 1), Buffer.alloc(16, 2)).update(Buffer.alloc(size / 2));
  const text = Buffer.from('export function module() { return require("lodash").map([1, 2, 3], (x) => x * 2); }\n'.repeat(Math.ceil(size / 2 / 80))).subarray(0, size / 2);
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += 8192) {
    random.copy(out, i, i / 2, Math.min(i / 2 + 4096, random.length));
    text.copy(out, i + 4096, i / 2, Math.min(i / 2 + 4096, text.length));
  }
  return out;
}

async function gzipStream(data: Buffer, options: Parameters<typeof parallelGzip>[0], chunk = 65536): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) chunks.push(data.subarray(i, i + chunk));
  return buffer(Readable.from(chunks).pipe(parallelGzip(options)));
}

const engines: GzipEngine[] = ['zlib', 'libdeflate'];
// The addon needs a C build and libdeflate-dev; CI installs both (ci/setup-machine.sh) and must not skip.
const notBuilt = native() ? false : 'native addon not built (npm run build:native)';

test('CI builds the native engine', { skip: !process.env.CI && 'only required in CI' }, () => {
  assert.ok(native(), 'the libdeflate addon must be built in CI: npm run build:native');
});

for (const engine of engines) {
  const skip = engine === 'libdeflate' ? notBuilt : false;

  test(`${engine}: output is valid gzip that gunzip and gzip -t accept`, { skip }, async () => {
    const data = sample(5 * 1024 * 1024 + 12345);
    const gz = await gzipStream(data, { engine, blockSize: 1024 * 1024 });
    assert.deepEqual(gunzipSync(gz), data);
    const check = await execa('gzip', ['-t'], { input: gz, reject: false, encoding: 'buffer' });
    assert.equal(check.exitCode, 0, String(check.stderr));
    const listed = await execa('gzip', ['-dc'], { input: gz, encoding: 'buffer' });
    assert.equal(Buffer.compare(Buffer.from(listed.stdout), data), 0);
  });

  test(`${engine}: bytes depend on level and block size only, not on concurrency, chunking or timing`, { skip }, async () => {
    const data = sample(3 * 1024 * 1024 + 7);
    const a = await gzipStream(data, { engine, blockSize: 256 * 1024, concurrency: 1 }, 1000);
    const b = await gzipStream(data, { engine, blockSize: 256 * 1024, concurrency: 8 }, 1 << 20);
    assert.deepEqual(a, b);
    if (engine === 'zlib') assert.deepEqual(a, parallelGzipSync(data, { blockSize: 256 * 1024 }));
  });

  test(`${engine}: edge sizes: empty, smaller than a block, exactly one block`, { skip }, async () => {
    for (const size of [0, 1, 100_000, 1024 * 1024, 2 * 1024 * 1024]) {
      const data = sample(size + (size % 2));
      assert.deepEqual(gunzipSync(await gzipStream(data, { engine, blockSize: 1024 * 1024 })), data, `size ${size}`);
    }
  });

  test(`${engine}: ratio stays within 1% of single-threaded gzip at the same level`, { skip }, async () => {
    const data = sample(4 * 1024 * 1024);
    const ours = (await gzipStream(data, { engine, level: 6, blockSize: 1024 * 1024 })).length;
    const single = gzipSync(data, { level: 6 }).length;
    assert.ok(ours <= single * 1.01, `parallel ${ours} vs single ${single}`);
  });
}

test('libdeflate: every block is a gzip member of its own, so a reader sees members, not one stream', { skip: notBuilt }, async () => {
  const data = sample(3 * 1024 * 1024);
  const gz = await gzipStream(data, { engine: 'libdeflate', blockSize: 1024 * 1024 });
  // Three members: three gzip headers, and each member's own trailer holds its block's size.
  let members = 0;
  for (let i = gz.indexOf(Buffer.from([0x1f, 0x8b, 0x08])); i >= 0; i = gz.indexOf(Buffer.from([0x1f, 0x8b, 0x08]), i + 1)) members++;
  assert.ok(members >= 3, `found ${members} member headers`);
  assert.equal(gz.readUInt32LE(gz.length - 4), 1024 * 1024);
});

test('a bad level is refused at once, with one clear line', () => {
  assert.throws(() => parallelGzip({ level: 12 }), /gzip level must be 1 to 9/);
});
