import { Readable } from 'node:stream';
import type { BuildfleetError } from '../errors.js';
import type { ByteSource } from './source.js';
import type { Piece } from './sparse.js';

const CHUNK = 256 << 10;

/** One entry's body: pulls from the source only as fast as the consumer reads. */
export class EntryBody {
  private readable: Readable | undefined;
  private index = 0;
  /** Archive data bytes of this entry not yet taken from the source. */
  private dataLeft: number;
  private readonly padBytes: number;
  private done = false;
  private running = false;
  private abandoned = false;
  private buffered = false;
  private error: unknown;
  private waiters: Array<() => void> = [];

  /** `pieces`: the dense content (zero runs of a sparse file, then data); `dataBytes`, `padBytes`: what the archive holds for it. */
  constructor(
    private readonly src: ByteSource,
    private readonly pieces: Piece[],
    dataBytes: number,
    padBytes: number,
    private readonly truncated: () => BuildfleetError,
  ) {
    this.dataLeft = dataBytes;
    this.padBytes = padBytes;
    if (pieces.length === 0) this.done = true;
  }

  get stream(): Readable {
    if (this.readable) return this.readable;
    if (this.buffered) throw new Error('tar entry: body asked for after buffer()');
    this.readable = new Readable({
      highWaterMark: 64 << 10,
      read: () => void this.pump(),
      destroy: (err, callback) => {
        this.notify();
        callback(err);
      },
    });
    if (this.done) this.readable.push(null);
    return this.readable;
  }

  /** The whole (dense) content at once; zero pieces come as zeros, as the stream gives them. */
  async buffer(): Promise<Buffer> {
    if (this.readable || this.buffered) throw new Error('tar entry: buffer() after the body was read');
    this.buffered = true;
    const parts: Buffer[] = [];
    let total = 0;
    for (; this.index < this.pieces.length; this.index++) {
      const piece = this.pieces[this.index]!;
      if (piece.length === 0) continue;
      let part: Buffer;
      if (piece.zero) part = Buffer.alloc(piece.length);
      else {
        part = await this.src.readExact(piece.length);
        this.dataLeft -= part.length;
        if (part.length < piece.length) throw (this.error = this.truncated());
      }
      parts.push(part);
      total += part.length;
    }
    this.done = true;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, total);
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  private async until(ready: () => boolean): Promise<void> {
    while (!ready()) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private async pump(): Promise<void> {
    if (this.running || this.done || this.abandoned || this.error !== undefined) return;
    const stream = this.readable!;
    this.running = true;
    try {
      for (;;) {
        const piece = this.pieces[this.index];
        if (!piece) {
          this.done = true;
          stream.push(null);
          return;
        }
        if (piece.length === 0) {
          this.index++;
          continue;
        }
        let chunk: Buffer;
        if (piece.zero) chunk = Buffer.alloc(Math.min(piece.length, CHUNK));
        else {
          chunk = await this.src.readSome(Math.min(piece.length, CHUNK));
          if (chunk.length === 0) throw this.truncated();
          this.dataLeft -= chunk.length;
        }
        piece.length -= chunk.length;
        if (this.abandoned || stream.destroyed) return;
        if (!stream.push(chunk)) return;
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.running = false;
      this.notify();
    }
  }

  private fail(err: unknown): void {
    this.error ??= err;
    const stream = this.readable!;
    if (stream.destroyed) return;
    // An 'error' event without listeners would crash the process: the iterator reports it anyway.
    if (stream.listenerCount('error') > 0) stream.destroy(err as Error);
    else stream.destroy();
  }

  private consumerAttached(): boolean {
    const stream = this.readable;
    return stream !== undefined && (stream.listenerCount('data') > 0 || stream.listenerCount('readable') > 0);
  }

  /** Before the next header: waits for an attached consumer, else skips what is left. */
  async finish(): Promise<void> {
    const stream = this.readable;
    if (stream && !this.done && this.error === undefined && this.consumerAttached()) {
      await this.until(() => this.done || this.error !== undefined || stream.destroyed);
    }
    if (!this.done && this.error === undefined) {
      this.abandoned = true;
      await this.until(() => !this.running);
      if (stream && !stream.destroyed) stream.destroy();
    }
    if (this.error !== undefined) throw this.error;
    const rest = this.dataLeft + this.padBytes;
    if ((await this.src.skip(rest)) < rest) throw this.truncated();
  }

  /** The consumer stopped iterating mid-entry. */
  abort(): void {
    this.abandoned = true;
    if (this.readable && !this.readable.destroyed) this.readable.destroy();
  }
}
