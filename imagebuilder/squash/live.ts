import { Readable, Transform, type TransformCallback } from 'node:stream';

/**
 * Passes an output blob's bytes through to its temp file unchanged and gives a copy of them, as
 * they are written, to `live` (an upload that can start before the digest is known). The copy
 * holds back the writer while it is behind (bounded memory), and lets go of it for good once
 * `live` is destroyed: a failed upload never stops or fails the output, which the caller then
 * sends again from the complete file. The output failing destroys `live` with its error.
 */
export class LiveCopy extends Transform {
  readonly live: Readable;
  private waiting: (() => void) | undefined;
  private ended = false;

  constructor() {
    super();
    this.live = new Readable({ highWaterMark: 1 << 20, read: () => this.release() });
    this.live.once('close', () => this.release());
    // The upload may not have opened it yet when the output fails; it still sees the error
    // when it does (the stream is destroyed with it), and the process must not crash meanwhile.
    this.live.on('error', () => {});
  }

  private release(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.live.destroyed || this.live.push(chunk)) done(null, chunk);
    else this.waiting = () => done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    this.ended = true;
    if (!this.live.destroyed) this.live.push(null);
    done();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // An ended output is destroyed too (autoDestroy), while the copy may still be read: only an
    // early end fails it.
    if (!this.ended && !this.live.destroyed) this.live.destroy(err ?? new Error('the output stopped before its end'));
    this.release();
    callback(err);
  }
}
