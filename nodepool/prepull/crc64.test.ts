import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { native } from '../../imagebuilder/native/index.js';
import { NATIVE_MIN_BYTES, crc64, crc64Feed, crc64Hasher, crc64Start, crc64Sum, jsCrc64Hasher, type Crc64Hasher } from './crc64.js';

/** Bit at a time with BigInt, straight from the definition: no tables, nothing shared with crc64.ts. */
function referenceCrc64(data: Uint8Array): string {
  const poly = 0xd800000000000000n;
  const mask = (1n << 64n) - 1n;
  let crc = mask;
  for (const byte of data) {
    crc ^= BigInt(byte);
    for (let bit = 0; bit < 8; bit++) crc = crc & 1n ? (crc >> 1n) ^ poly : crc >> 1n;
  }
  return (crc ^ mask).toString(16).padStart(16, '0');
}

/**
 * Sizes around every boundary the code has: the 8-byte slices, the native folding (16-byte
 * steps from 64 bytes on), the native threshold, big payloads.
 */
const SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 79, 80, 81, 95, 96, 127, 128, 129, 511, 512, 513, 4095, 65_535, NATIVE_MIN_BYTES, NATIVE_MIN_BYTES + 3, 1_000_003];

test('known CRC-64/ISO vectors (Go hash/crc64 with the ISO table)', () => {
  assert.equal(crc64(Buffer.from('123456789')).toString('hex'), 'b90956c775a41001');
  assert.equal(crc64(Buffer.alloc(0)).toString('hex'), '0000000000000000');
  assert.equal(crc64(Buffer.from('a')).toString('hex'), '3420000000000000');
  assert.equal(crc64(Buffer.from('abc')).toString('hex'), '3776c42000000000');
  assert.equal(crc64(Buffer.from('123456789')).toString('hex'), referenceCrc64(Buffer.from('123456789')));
});

test('the JS slicing-by-8 equals the bit-at-a-time definition at every size and split', () => {
  for (const size of SIZES.filter((s) => s < 70_000)) {
    const data = randomBytes(size);
    const expected = referenceCrc64(data);
    assert.equal(crc64(data).toString('hex'), expected, `size ${size}`);
    // Fed in uneven pieces (not multiples of 8): the tail loop and the slices must join up.
    const state = crc64Start();
    for (let at = 0; at < size; at += 13) crc64Feed(state, data.subarray(at, at + 13));
    assert.equal(crc64Sum(state).toString('hex'), expected, `size ${size} in pieces of 13`);
  }
});

async function feed(hasher: Crc64Hasher, data: Buffer, piece: number): Promise<string> {
  for (let at = 0; at < data.length; at += piece * 3) {
    // Several buffers per update, as a walker hands over consecutive chunks.
    await hasher.update([data.subarray(at, at + piece), data.subarray(at + piece, at + 2 * piece), data.subarray(at + 2 * piece, at + 3 * piece)]);
  }
  return hasher.final().toString('hex');
}

test('crc64Hasher: native (thread pool) and JS give the same sums on random data of many sizes', { skip: native() ? false : 'native addon not built (npm run build:native)' }, async () => {
  const addon = native()!;
  for (const size of SIZES) {
    const data = randomBytes(size);
    const expected = crc64(data).toString('hex');
    assert.equal(await feed(addon.crc64(), data, 4099), expected, `native, size ${size}`);
    assert.equal(await feed(crc64Hasher(), data, 65_536), expected, `crc64Hasher(), size ${size}`);
    assert.equal(await feed(crc64Hasher(size), data, 1000), expected, `crc64Hasher(size), size ${size}`);
    assert.equal(await feed(jsCrc64Hasher(), data, 777), expected, `JS, size ${size}`);
  }
  // Several hashers at once on the pool keep their own state.
  const inputs = SIZES.map((size) => randomBytes(size));
  const sums = await Promise.all(inputs.map((data) => feed(addon.crc64(), data, 8192)));
  assert.deepEqual(sums, inputs.map((data) => crc64(data).toString('hex')));
});

test('native crc64: one update at a time, nothing after final, and only its own hashers', { skip: native() ? false : 'native addon not built (npm run build:native)' }, async () => {
  const hasher = native()!.crc64();
  const running = hasher.update([randomBytes(1 << 20)]);
  await assert.rejects(async () => hasher.update([Buffer.from('x')]), /previous update has not finished/);
  assert.throws(() => hasher.updateNow([Buffer.from('x')]), /an update is running/);
  assert.throws(() => hasher.final(), /still updating/);
  await running;
  hasher.final();
  await assert.rejects(async () => hasher.update([Buffer.from('x')]), /already final/);
  // A sha256 hasher handed to crc64Final is refused, not misread.
  const { createRequire } = await import('node:module');
  const { packageRoot } = await import('../../imagebuilder/package-root.js');
  const addon = createRequire(import.meta.url)(`${packageRoot}/imagebuilder/native/build/Release/buildfleet_native.node`) as { sha256New(): object; crc64Final(h: object): Buffer };
  assert.throws(() => addon.crc64Final(addon.sha256New()), /not a hasher/);
});

test('small payloads are summed on this thread (in C where built), BUILDFLEET_NATIVE=0 takes the JS path, with the same sums', async () => {
  const data = randomBytes(100_000);
  const expected = crc64(data).toString('hex');
  const small = crc64Hasher(100);
  // Settled at once: no thread-pool round trip for a small payload.
  let settled = false;
  void small.update([data]).then(() => (settled = true));
  await Promise.resolve();
  assert.equal(settled, true);
  assert.equal(small.final().toString('hex'), expected);
  const { execa } = await import('execa');
  const script = `import { crc64Hasher } from './nodepool/prepull/crc64.ts'; import { native } from './imagebuilder/native/index.ts';
    const h = crc64Hasher(); await h.update([Buffer.from('123456789')]); console.log(native() === undefined, h.final().toString('hex'));`;
  const { packageRoot } = await import('../../imagebuilder/package-root.js');
  const run = await execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: packageRoot, env: { BUILDFLEET_NATIVE: '0' } });
  assert.equal(run.stdout.trim(), 'true b90956c775a41001');
});
