import { createReadStream, createWriteStream, type ReadStream, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * Pass 1 already decompresses and verifies every layer; keeping that verified tar on disk lets
 * pass 2 read it back instead of downloading, decompressing and hashing the blob a second time.
 * Chunks pass through unchanged and are written to `path` on the way, with the file's
 * backpressure, so the tee holds no more memory than the stream it sits in.
 */
export class SpoolStream extends Transform {
  private readonly file: WriteStream;
  private readonly fileClosed: Promise<void>;
  private complete = false;

  constructor(readonly path: string) {
    super();
    this.file = createWriteStream(path, { flags: 'wx' });
    this.fileClosed = new Promise((resolve) => this.file.once('close', resolve));
    this.file.on('error', (err) => this.destroy(err));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.file.write(chunk)) done(null, chunk);
    else this.file.once('drain', () => done(null, chunk));
  }

  override _flush(done: TransformCallback): void {
    // The upstream verifier only lets the stream end when the diff_id matched: a spool whose
    // flush ran holds exactly the verified tar.
    this.file.end((err?: Error | null) => {
      if (!err) this.complete = true;
      done(err);
    });
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.file.destroyed) this.file.destroy();
    callback(err);
  }

  /**
   * Waits until the file is closed; true when it holds the whole verified tar. An incomplete
   * spool is removed, so nothing can read a partial one.
   */
  async settle(): Promise<boolean> {
    if (!this.complete && !this.destroyed) this.destroy();
    await this.fileClosed;
    if (!this.complete) await rm(this.path, { force: true });
    return this.complete;
  }
}

/**
 * Where each entry of a spooled tar lies (recorded in pass 1), so that pass 2 can copy runs of
 * entries it writes unchanged as the bytes they are, without parsing or encoding each again.
 * Typed arrays: a few bytes per entry, not an object.
 */
export class EntrySpans {
  start = new Float64Array(1024);
  end = new Float64Array(1024);
  /** Content bytes (files only; 0 for the others), for progress. */
  size = new Float64Array(1024);
  /** 1 where the bytes start..end are the entry as it is to be written (TarEntry.plain). */
  plain = new Uint8Array(1024);
  length = 0;

  add(start: number, end: number, size: number, plain: boolean): void {
    if (this.length === this.start.length) this.grow(this.length * 2);
    const i = this.length++;
    this.start[i] = start;
    this.end[i] = end;
    this.size[i] = size;
    this.plain[i] = plain ? 1 : 0;
  }

  /** Gives back the room that was never used. */
  trim(): this {
    this.grow(this.length);
    return this;
  }

  private grow(capacity: number): void {
    const resize = <T extends Float64Array | Uint8Array>(from: T, to: T): T => {
      to.set(from.subarray(0, this.length));
      return to;
    };
    this.start = resize(this.start, new Float64Array(capacity));
    this.end = resize(this.end, new Float64Array(capacity));
    this.size = resize(this.size, new Float64Array(capacity));
    this.plain = resize(this.plain, new Uint8Array(capacity));
  }
}

/**
 * A spool read front to back in byte ranges, each handed out as views of the file's chunks (no
 * copy); ranges must come in order and not overlap. Ends on `close`.
 */
export class SpoolReader {
  private readonly file: ReadStream;
  private readonly chunks: AsyncIterator<Buffer>;
  private chunk: Buffer = Buffer.alloc(0);
  private chunkStart = 0;

  constructor(
    readonly path: string,
    readonly what: string,
  ) {
    this.file = createReadStream(path, { highWaterMark: 1 << 20 });
    this.chunks = this.file[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  async *range(from: number, to: number): AsyncGenerator<Buffer, void, undefined> {
    if (from < this.chunkStart) throw new Error(`${this.what}: spool read at ${from}, behind ${this.chunkStart}`);
    let at = from;
    while (at < to) {
      while (at >= this.chunkStart + this.chunk.length) {
        const next = await this.chunks.next();
        if (next.done) throw new Error(`${this.what}: spool ${this.path} ends at ${this.chunkStart + this.chunk.length}, before ${to}`);
        this.chunkStart += this.chunk.length;
        this.chunk = next.value;
      }
      const end = Math.min(to, this.chunkStart + this.chunk.length);
      yield this.chunk.subarray(at - this.chunkStart, end - this.chunkStart);
      at = end;
    }
  }

  close(): void {
    this.file.destroy();
  }
}
