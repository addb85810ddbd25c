import { Transform, type TransformCallback } from 'node:stream';
import { availableParallelism } from 'node:os';
import { constants, crc32, deflateRaw, deflateRawSync, type ZlibOptions } from 'node:zlib';
import { BuildfleetError } from '../oci/errors.js';

/**
 * gzip on every core, as pigz does: the input is cut into fixed-size blocks, each block is
 * deflated on libuv's thread pool (zlib's async calls), primed with the previous block's last
 * 32 KiB so the ratio stays close to single-threaded gzip, and ended with a sync flush so the
 * pieces concatenate into ONE valid deflate stream in one gzip member that every runtime reads.
 * The bytes depend only on level and block size, never on the number of cores or on timing.
 */
export type ParallelGzipOptions = { level?: number; blockSize?: number; concurrency?: number };

const WINDOW = 32 * 1024;
const HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03]); // no name, mtime 0, OS unix: as Node's gzip

function deflateBlock(block: Buffer, dictionary: Buffer | undefined, level: number, last: boolean): Promise<Buffer> {
  // One output chunk per block: zlib's default 16 KiB chunks cost a main-thread callback each.
  const chunkSize = Math.max(64 * 1024, block.length + (block.length >> 3) + 1024);
  const options: ZlibOptions = { level, chunkSize, finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH, ...(dictionary && { dictionary }) };
  return new Promise((resolve, reject) => deflateRaw(block, options, (err, out) => (err ? reject(err) : resolve(out))));
}

export class ParallelGzip extends Transform {
  private readonly level: number;
  private readonly blockSize: number;
  private readonly concurrency: number;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private previousTail: Buffer | undefined;
  private readonly inFlight: Array<Promise<Buffer>> = [];
  private crc = 0;
  private total = 0;
  private headerSent = false;

  constructor(options: ParallelGzipOptions = {}) {
    super();
    this.level = options.level ?? constants.Z_DEFAULT_COMPRESSION;
    if (!Number.isInteger(this.level) || this.level < -1 || this.level > 9) {
      throw new BuildfleetError('usage', `gzip level must be 1 to 9 (or -1 for the default), got ${options.level}`);
    }
    this.blockSize = Math.max(WINDOW * 2, options.blockSize ?? 1024 * 1024);
    this.concurrency = Math.max(1, options.concurrency ?? availableParallelism() * 2);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.crc = crc32(chunk, this.crc);
    this.total += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.drainFullBlocks().then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    (async () => {
      await this.drainFullBlocks();
      const rest = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
      this.startBlock(rest, true);
      while (this.inFlight.length > 0) this.pushOut(await this.inFlight.shift()!);
      const trailer = Buffer.alloc(8);
      trailer.writeUInt32LE(this.crc >>> 0, 0);
      trailer.writeUInt32LE(this.total % 2 ** 32, 4);
      this.push(trailer);
    })().then(() => done(), done);
  }

  private async drainFullBlocks(): Promise<void> {
    while (this.pendingBytes >= this.blockSize) {
      const all = Buffer.concat(this.pending, this.pendingBytes);
      const block = all.subarray(0, this.blockSize);
      const rest = all.subarray(this.blockSize);
      this.pending = rest.length > 0 ? [rest] : [];
      this.pendingBytes = rest.length;
      this.startBlock(block, false);
      // Backpressure: never more than `concurrency` blocks in the thread pool at once.
      while (this.inFlight.length >= this.concurrency) this.pushOut(await this.inFlight.shift()!);
    }
  }

  private startBlock(block: Buffer, last: boolean): void {
    const deflated = deflateBlock(block, this.previousTail, this.level, last);
    // Awaited later, in order; until then a failure must not count as unhandled (it would crash the process).
    deflated.catch(() => {});
    this.inFlight.push(deflated);
    // Only full blocks come before the last, so the tail is always a whole window (copied: the
    // dictionary must not alias a buffer the caller may reuse).
    if (!last) this.previousTail = Buffer.from(block.subarray(block.length - WINDOW));
  }

  private pushOut(deflated: Buffer): void {
    if (!this.headerSent) {
      this.push(HEADER);
      this.headerSent = true;
    }
    this.push(deflated);
  }
}

export function parallelGzip(options: ParallelGzipOptions = {}): ParallelGzip {
  return new ParallelGzip(options);
}

/** For tests: the same bytes in one call. */
export function parallelGzipSync(data: Buffer, options: ParallelGzipOptions = {}): Buffer {
  const level = options.level ?? constants.Z_DEFAULT_COMPRESSION;
  const blockSize = Math.max(WINDOW * 2, options.blockSize ?? 1024 * 1024);
  const parts: Buffer[] = [HEADER];
  let tail: Buffer | undefined;
  let offset = 0;
  for (; data.length - offset >= blockSize; offset += blockSize) {
    const block = data.subarray(offset, offset + blockSize);
    parts.push(deflateRawSync(block, { level, finishFlush: constants.Z_SYNC_FLUSH, ...(tail && { dictionary: tail }) }));
    tail = block.subarray(block.length - WINDOW);
  }
  const rest = data.subarray(offset);
  parts.push(deflateRawSync(rest, { level, finishFlush: constants.Z_FINISH, ...(tail && { dictionary: tail }) }));
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(data) >>> 0, 0);
  trailer.writeUInt32LE(data.length % 2 ** 32, 4);
  parts.push(trailer);
  return Buffer.concat(parts);
}
