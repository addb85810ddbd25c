import { createWriteStream, type WriteStream } from 'node:fs';
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
