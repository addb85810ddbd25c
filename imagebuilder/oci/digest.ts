import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { native, type NativeHash } from '../native/index.js';
import { BuildfleetError } from '../errors.js';

export function sha256Digest(data: Uint8Array | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

export function digestHex(digest: string): string {
  const colon = digest.indexOf(':');
  return colon < 0 ? digest : digest.slice(colon + 1);
}

export function digestAlgorithm(digest: string): string {
  return digest.slice(0, digest.indexOf(':'));
}

/**
 * The hash of a stream. SHA-256 of a large stream runs on the thread pool where the native addon
 * is built: a squash hashes several GB, which would otherwise take a core's worth of the main
 * thread. Chunks wait in batches while the previous update runs, so an update is one trip to the
 * pool however small the chunks; `update` returns a promise (wait for it) only when too much
 * waits. The chunks are passed on meanwhile: nothing downstream may change them.
 */
class StreamHash {
  private static readonly BATCH = 1 << 20;
  private static readonly MOST_WAITING = 4 << 20;
  private readonly pool: NativeHash | undefined;
  private readonly here: Hash | undefined;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private running: Promise<void> | undefined;
  private failed: Error | undefined;
  private sent = false;

  constructor(private readonly algorithm: string) {
    const accelerator = algorithm === 'sha256' ? native() : undefined;
    this.pool = accelerator?.sha256();
    if (!this.pool) this.here = createHash(algorithm);
  }

  update(chunk: Buffer): Promise<void> | undefined {
    if (this.here) {
      this.here.update(chunk);
      return undefined;
    }
    if (this.failed) return Promise.reject(this.failed);
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (!this.running && this.batchBytes >= StreamHash.BATCH) this.send();
    return this.batchBytes >= StreamHash.MOST_WAITING ? this.idle() : undefined;
  }

  private send(): void {
    const buffers = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    this.sent = true;
    this.running = this.pool!.update(buffers).then(
      () => {
        this.running = undefined;
        if (this.batchBytes >= StreamHash.BATCH) this.send();
      },
      (err: Error) => {
        this.running = undefined;
        this.failed = err;
      },
    );
  }

  private async idle(): Promise<void> {
    while (this.running) await this.running;
    if (this.failed) throw this.failed;
  }

  async digest(): Promise<string> {
    if (this.here) return `${this.algorithm}:${this.here.digest('hex')}`;
    if (!this.sent) {
      // Too short to have gone to the pool: one call here costs less than the trip.
      const hash = createHash(this.algorithm);
      for (const chunk of this.batch) hash.update(chunk);
      return `${this.algorithm}:${hash.digest('hex')}`;
    }
    await this.idle();
    if (this.batch.length > 0) {
      this.send();
      await this.idle();
    }
    return `${this.algorithm}:${this.pool!.final()}`;
  }
}

/** Passes the chunk on at once; waits only when the hash has too much waiting. */
function hashThenPass(hash: StreamHash, chunk: Buffer, done: TransformCallback): void {
  const wait = hash.update(chunk);
  if (wait) wait.then(() => done(null, chunk), done);
  else done(null, chunk);
}

/**
 * A pass-through that hashes and counts what flows by. Read `digest` and `size` after 'end'.
 * Hashing in the same pass as the copy avoids reading a blob twice.
 */
export class DigestStream extends Transform {
  private readonly hash: StreamHash | undefined;
  private readonly algorithm: string;
  size = 0;
  private result: string | undefined;

  /**
   * With `knownDigest`, bytes are only counted: for a source that verifies itself, and a
   * receiver that checks again, a second hash is CPU spent for nothing.
   */
  constructor(algorithm = 'sha256', options: { knownDigest?: string } = {}) {
    super();
    this.algorithm = algorithm;
    if (options.knownDigest !== undefined) this.result = options.knownDigest;
    else this.hash = new StreamHash(algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.size += chunk.length;
    if (this.hash) hashThenPass(this.hash, chunk, done);
    else done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (!this.hash) return done();
    this.hash.digest().then((digest) => {
      this.result = digest;
      done();
    }, done);
  }

  get digest(): string {
    if (this.result === undefined) throw new Error('DigestStream: digest read before the stream ended');
    return this.result;
  }
}

/**
 * Passes bytes through and fails the stream (instead of ending it) when the content does not
 * match the expected digest or size, so a consumer never commits corrupt data.
 */
export class VerifyingStream extends Transform {
  private readonly hash: StreamHash | undefined;
  private seen = 0;

  /** With `hash: false` only the size is checked: for callers that have the digest checked where the bytes land. */
  constructor(
    private readonly expectedDigest: string,
    private readonly expectedSize: number | undefined,
    private readonly what: string,
    options: { hash?: boolean } = {},
  ) {
    super();
    if (options.hash !== false) this.hash = new StreamHash(digestAlgorithm(expectedDigest) || 'sha256');
  }

  /** Bytes passed so far (all of them once the stream has ended). */
  get bytesSeen(): number {
    return this.seen;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.seen += chunk.length;
    if (this.expectedSize !== undefined && this.seen > this.expectedSize) {
      done(new BuildfleetError('integrity', `${this.what}: more bytes than the ${this.expectedSize} its descriptor declares`));
      return;
    }
    if (this.hash) hashThenPass(this.hash, chunk, done);
    else done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.expectedSize !== undefined && this.seen !== this.expectedSize) {
      done(new BuildfleetError('integrity', `${this.what}: got ${this.seen} bytes, expected ${this.expectedSize}`));
      return;
    }
    if (!this.hash) {
      done();
      return;
    }
    this.hash.digest().then((actual) => {
      if (actual !== this.expectedDigest) done(new BuildfleetError('integrity', `${this.what}: content digest ${actual} does not match ${this.expectedDigest}`));
      else done();
    }, done);
  }
}

