import type { Readable } from 'node:stream';

/**
 * Pull-based bytes from a Readable, in paused mode ('readable' + read()), so the tar reader
 * asks for exactly what it needs and backpressure reaches the producer. Not the stream's async
 * iterator: that one destroys the stream when iteration stops, and a caller may want to read
 * what follows the end-of-archive blocks (padding, for a digest check).
 */
export class ByteSource {
  /** Bytes handed out so far (the offset of the next byte in the stream). */
  position = 0;
  private chunk: Buffer | undefined;
  private offset = 0;
  private ended: boolean;
  private error: unknown;
  private wake: (() => void) | undefined;
  private detached = false;

  constructor(private readonly input: Readable) {
    this.ended = input.readableEnded;
    if (input.errored) this.error = input.errored;
    else if (input.destroyed && !input.readableEnded) this.error = new Error('tar input was destroyed before it ended');
    input.on('readable', this.notify);
    input.on('end', this.onEnd);
    input.on('error', this.onError);
    input.on('close', this.onClose);
  }

  private readonly notify = (): void => {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.notify();
  };
  private readonly onError = (err: unknown): void => {
    this.error ??= err;
    this.notify();
  };
  private readonly onClose = (): void => {
    if (!this.ended) this.error ??= new Error('tar input closed before it ended');
    this.notify();
  };

  private async fill(): Promise<boolean> {
    if (this.chunk && this.offset < this.chunk.length) return true;
    for (;;) {
      if (this.error) throw this.error;
      if (this.detached) throw new Error('tar input is no longer being read');
      const data = this.input.read() as Buffer | string | null;
      if (data !== null) {
        this.chunk = typeof data === 'string' ? Buffer.from(data) : data;
        this.offset = 0;
        if (this.chunk.length > 0) return true;
        continue;
      }
      if (this.ended || this.input.readableEnded) return false;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Up to `max` bytes (at least one), or an empty buffer at the end of the input. Zero-copy. */
  async readSome(max: number): Promise<Buffer> {
    if (max <= 0 || !(await this.fill())) return Buffer.alloc(0);
    const chunk = this.chunk!;
    const end = Math.min(chunk.length, this.offset + max);
    const out = chunk.subarray(this.offset, end);
    this.offset = end;
    this.position += out.length;
    return out;
  }

  /** Exactly `length` bytes, or fewer if the input ends first. */
  async readExact(length: number): Promise<Buffer> {
    const first = await this.readSome(length);
    if (first.length === length || first.length === 0) return first;
    const parts = [first];
    let have = first.length;
    while (have < length) {
      const part = await this.readSome(length - have);
      if (part.length === 0) break;
      parts.push(part);
      have += part.length;
    }
    return Buffer.concat(parts, have);
  }

  /** Skips `length` bytes; returns how many were there. */
  async skip(length: number): Promise<number> {
    let skipped = 0;
    while (skipped < length) {
      const part = await this.readSome(Math.min(length - skipped, 1 << 20));
      if (part.length === 0) break;
      skipped += part.length;
    }
    return skipped;
  }

  private detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.input.off('readable', this.notify);
    this.input.off('end', this.onEnd);
    this.input.off('error', this.onError);
    this.input.off('close', this.onClose);
    this.notify();
  }

  /** Hands the input back, positioned right after the last byte used (the rest stays readable). */
  release(): void {
    const rest = this.chunk && this.offset < this.chunk.length ? this.chunk.subarray(this.offset) : undefined;
    this.chunk = undefined;
    this.detach();
    if (rest && !this.input.readableEnded && !this.input.destroyed) this.input.unshift(rest);
  }

  /** Stops reading and destroys the input (after an error, or when the consumer stopped early). */
  destroy(): void {
    this.detach();
    this.input.on('error', () => {}); // late errors of an abandoned input have nobody left to tell
    if (!this.input.destroyed) this.input.destroy();
  }
}
