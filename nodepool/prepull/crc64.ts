import { native } from '../../imagebuilder/native/index.js';

/**
 * CRC-64/ISO as Go's hash/crc64 computes it with crc64.MakeTable(crc64.ISO): reflected
 * polynomial 0xD800000000000000, initial value and final XOR all ones, the sum written as 8
 * big-endian bytes. tar-split (and so Docker's layer store) keeps this checksum of every file's
 * payload, and checks it when it puts a layer tar back together for `docker save` / `push`.
 *
 * JS has no fast 64-bit integers (BigInt allocates), so the state is two 32-bit halves and the
 * loop is table-driven slicing-by-8: eight table look-ups per half for every 8 input bytes.
 * The native addon (imagebuilder/native) does the same in C on libuv's thread pool.
 */

const POLY_HI = 0xd8000000; // ISO polynomial, reflected: 0xD800000000000000 (its low half is 0)
const SLICES = 8;

/** TABLE_LO/HI[k * 256 + b]: the CRC of byte b followed by k zero bytes (slicing-by-8 tables). */
const TABLE_LO = new Int32Array(SLICES * 256);
const TABLE_HI = new Int32Array(SLICES * 256);

for (let b = 0; b < 256; b++) {
  let lo = b;
  let hi = 0;
  for (let bit = 0; bit < 8; bit++) {
    const carry = lo & 1;
    lo = (lo >>> 1) | ((hi & 1) << 31);
    hi = hi >>> 1;
    if (carry) hi ^= POLY_HI;
  }
  TABLE_LO[b] = lo;
  TABLE_HI[b] = hi;
}
for (let k = 1; k < SLICES; k++) {
  for (let b = 0; b < 256; b++) {
    const prevLo = TABLE_LO[(k - 1) * 256 + b]!;
    const prevHi = TABLE_HI[(k - 1) * 256 + b]!;
    const index = prevLo & 0xff;
    // (prev >> 8) ^ T0[prev & 0xff]
    TABLE_LO[k * 256 + b] = ((prevLo >>> 8) | (prevHi << 24)) ^ TABLE_LO[index]!;
    TABLE_HI[k * 256 + b] = (prevHi >>> 8) ^ TABLE_HI[index]!;
  }
}

/** A running CRC-64/ISO (the register, already inverted: start from `crc64Start()`). */
export type Crc64State = { lo: number; hi: number };

export function crc64Start(): Crc64State {
  return { lo: ~0, hi: ~0 };
}

/** Feeds `data` into `state` (in place). */
export function crc64Feed(state: Crc64State, data: Uint8Array): void {
  let lo = state.lo;
  let hi = state.hi;
  const end = data.length;
  const fast = end - (end % 8);
  const tLo = TABLE_LO;
  const tHi = TABLE_HI;
  let i = 0;
  for (; i < fast; i += 8) {
    const b0 = (lo ^ data[i]!) & 0xff;
    const b1 = ((lo >>> 8) ^ data[i + 1]!) & 0xff;
    const b2 = ((lo >>> 16) ^ data[i + 2]!) & 0xff;
    const b3 = (lo >>> 24) ^ data[i + 3]!;
    const b4 = (hi ^ data[i + 4]!) & 0xff;
    const b5 = ((hi >>> 8) ^ data[i + 5]!) & 0xff;
    const b6 = ((hi >>> 16) ^ data[i + 6]!) & 0xff;
    const b7 = (hi >>> 24) ^ data[i + 7]!;
    lo =
      tLo[1792 + b0]! ^ tLo[1536 + b1]! ^ tLo[1280 + b2]! ^ tLo[1024 + b3]! ^
      tLo[768 + b4]! ^ tLo[512 + b5]! ^ tLo[256 + b6]! ^ tLo[b7]!;
    hi =
      tHi[1792 + b0]! ^ tHi[1536 + b1]! ^ tHi[1280 + b2]! ^ tHi[1024 + b3]! ^
      tHi[768 + b4]! ^ tHi[512 + b5]! ^ tHi[256 + b6]! ^ tHi[b7]!;
  }
  for (; i < end; i++) {
    const index = (lo ^ data[i]!) & 0xff;
    lo = ((lo >>> 8) | (hi << 24)) ^ tLo[index]!;
    hi = (hi >>> 8) ^ tHi[index]!;
  }
  state.lo = lo;
  state.hi = hi;
}

/** The 8-byte big-endian sum (Go's crc64 `Sum(nil)`), leaving `state` as it is. */
export function crc64Sum(state: Crc64State): Buffer {
  const sum = Buffer.allocUnsafe(8);
  sum.writeUInt32BE(~state.hi >>> 0, 0);
  sum.writeUInt32BE(~state.lo >>> 0, 4);
  return sum;
}

/** CRC-64/ISO of the buffers, one after another, on this thread. */
export function crc64(...data: Uint8Array[]): Buffer {
  const state = crc64Start();
  for (const piece of data) crc64Feed(state, piece);
  return crc64Sum(state);
}

export type Crc64Hasher = {
  /** Feeds the buffers in order; one update at a time, and they must not change until it settles. */
  update(buffers: Buffer[]): Promise<void>;
  /** The 8-byte big-endian sum, once no update is running. */
  final(): Buffer;
};

/**
 * Below this many bytes a payload is summed on the calling thread: handing work to the pool
 * costs tens of microseconds, which is more than the sum takes.
 */
export const NATIVE_MIN_BYTES = 64 * 1024;

/**
 * A streaming CRC-64/ISO: on libuv's thread pool where the native addon is built (and
 * BUILDFLEET_NATIVE is not 0), else in JS on this thread. `sizeHint`, the payload's size where
 * known (a tar header says it), keeps payloads smaller than NATIVE_MIN_BYTES on this thread, in
 * C where the addon is there (a layer of small files spent seconds of its main thread in the JS loop).
 */
export function crc64Hasher(sizeHint?: number): Crc64Hasher {
  const accelerator = native();
  if (!accelerator) return jsCrc64Hasher();
  const hasher = accelerator.crc64();
  if (sizeHint === undefined || sizeHint >= NATIVE_MIN_BYTES) return hasher;
  return {
    update(buffers) {
      hasher.updateNow(buffers);
      return Promise.resolve();
    },
    final: () => hasher.final(),
  };
}

/** The JS hasher (also the fallback): every update runs at once, the promise is already settled. */
export function jsCrc64Hasher(): Crc64Hasher {
  const state = crc64Start();
  return {
    update(buffers) {
      for (const buffer of buffers) crc64Feed(state, buffer);
      return Promise.resolve();
    },
    final: () => crc64Sum(state),
  };
}
