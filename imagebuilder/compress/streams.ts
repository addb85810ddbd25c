import { Transform, type Duplex, type Readable, type TransformCallback } from 'node:stream';
import { BuildfleetError } from '../errors.js';

/**
 * Like pipe(), but an error anywhere upstream reaches the end of the chain, as one clear line,
 * and a chain torn down at its end stops everything feeding it (an open socket, a file, a zstd
 * child blocked on a full pipe would otherwise keep the process alive).
 */
export function pipeOn<T extends Transform | Duplex>(source: Readable, next: T): T {
  source.once('error', (err) => next.destroy(explainStreamError(err)));
  next.once('close', () => {
    if (!source.destroyed && !source.readableEnded) source.destroy();
  });
  source.pipe(next);
  return next;
}

/** zlib's errors ("invalid distance too far back", "unexpected end of file") mean corrupt or cut-off data. */
export function explainStreamError(err: Error): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (err instanceof BuildfleetError || typeof code !== 'string' || !code.startsWith('Z_')) return err;
  return new BuildfleetError('integrity', `corrupt or truncated compressed data: ${err.message}`, { cause: err });
}

/**
 * Gathers small chunks (a download arrives in ~64 KiB pieces) into pieces of at least `bytes`:
 * each chunk a zlib stream gets is a trip to the thread pool and back through the main thread.
 */
export class Coalesce extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  constructor(private readonly bytes: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= this.bytes) this.push(this.gathered());
    done();
  }
  override _flush(done: TransformCallback): void {
    if (this.pendingBytes > 0) this.push(this.gathered());
    done();
  }
  private gathered(): Buffer {
    const out = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    return out;
  }
}

/** Counts bytes flowing by, for progress. */
export class ByteCounter extends Transform {
  constructor(private readonly onBytes: (bytes: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.onBytes(chunk.length);
    done(null, chunk);
  }
}
