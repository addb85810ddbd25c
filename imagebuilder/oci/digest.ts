import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { BuildfleetError } from './errors.js';

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
 * A pass-through that hashes and counts what flows by. Read `digest` and `size` after 'end'.
 * Hashing in the same pass as the copy avoids reading a blob twice.
 */
export class DigestStream extends Transform {
  private readonly hash: Hash | undefined;
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
    else this.hash = createHash(algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash?.update(chunk);
    this.size += chunk.length;
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.hash) this.result = `${this.algorithm}:${this.hash.digest('hex')}`;
    done();
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
  private readonly hash: Hash | undefined;
  private seen = 0;

  /** With `hash: false` only the size is checked: for callers that have the digest checked where the bytes land. */
  constructor(
    private readonly expectedDigest: string,
    private readonly expectedSize: number | undefined,
    private readonly what: string,
    options: { hash?: boolean } = {},
  ) {
    super();
    if (options.hash !== false) this.hash = createHash(digestAlgorithm(expectedDigest) || 'sha256');
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
    this.hash?.update(chunk);
    done(null, chunk);
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
    const actual = `${digestAlgorithm(this.expectedDigest)}:${this.hash.digest('hex')}`;
    if (actual !== this.expectedDigest) {
      done(new BuildfleetError('integrity', `${this.what}: content digest ${actual} does not match ${this.expectedDigest}`));
      return;
    }
    done();
  }
}

/**
 * Chain IDs identify a stack of layers by their diff_ids (image-spec config.md):
 * ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const previous = out[out.length - 1];
    out.push(previous === undefined ? diffId : sha256Digest(`${previous} ${diffId}`));
  }
  return out;
}
