import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Transform, type Duplex, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { decompressor } from '../../imagebuilder/compress/codecs.js';
import { explainStreamError } from '../../imagebuilder/compress/streams.js';
import { DigestStream } from '../../imagebuilder/oci/digest.js';
import type { Compression } from '../../imagebuilder/oci/media-types.js';
import { UnsupportedLayer, walkLayer } from './layer-walk.js';
import { TarSplitRecorder } from './tar-split.js';

/**
 * One layer's way from its compressed bytes to its overlay2 diff dir: decompressed, its diff_id
 * summed, walked once for both GNU tar (the files) and tar-split (what Docker keeps to give the
 * layer back). The same in the installing process and in an extraction child process
 * (extract-child.ts), which is how a big layer gets a core of its own.
 */

export type ExtractRequest = { compression: Compression; diffDir: string; what: string };
export type ExtractedLayer = { diffId: string; sizeOnDisk: number; entries: number; tarSplit: Buffer };
/** The compressed bytes: a source and the transforms they pass first (the digest check). */
export type CompressedInput = [Readable, ...Duplex[]];

export async function extractLayer(compressed: CompressedInput, request: ExtractRequest, signal: AbortSignal): Promise<ExtractedLayer> {
  const { compression, diffDir, what } = request;
  const diff = new DigestStream('sha256');
  const tarSplit = new TarSplitRecorder();
  const local = new AbortController();
  const stop = AbortSignal.any([signal, local.signal]);
  const extractor = spawnExtractor(diffDir, what, stop);
  const walked = (async () => {
    const facts = await walkLayer(diff, (chunk) => extractor.write(chunk), tarSplit, what);
    await extractor.end();
    return facts;
  })();
  const flowing = pipeline([...compressed, new MagicCheck(compression, what), decompressor(compression), diff], { signal: stop }).catch((err: Error) =>
    Promise.reject(namingLayer(explainStreamError(err), err, what)),
  );
  walked.catch(() => {});
  flowing.catch(() => {});
  try {
    const [facts] = await Promise.all([walked, flowing]);
    return { diffId: diff.digest, sizeOnDisk: facts.sizeOnDisk, entries: facts.entries, tarSplit: await tarSplit.finish() };
  } catch (err) {
    // One side failed: stop the other (the walk stops reading, the pipeline stops flowing, tar is
    // killed) and wait until both are gone, so that nothing writes into the dir after this returns.
    local.abort(err);
    await Promise.allSettled([walked, flowing]);
    throw err;
  }
}

/**
 * Docker picks a layer's decompression by its first bytes, not by its media type: a layer whose
 * bytes say otherwise than its type is left to the runtime (UnsupportedLayer) rather than failed.
 */
export class MagicCheck extends Transform {
  private checked = false;

  constructor(
    private readonly expected: Compression,
    private readonly what: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (!this.checked && chunk.length >= 4) {
      this.checked = true;
      const found = chunk[0] === 0x1f && chunk[1] === 0x8b ? 'gzip' : chunk.readUInt32LE(0) === 0xfd2fb528 ? 'zstd' : 'none';
      if (found !== this.expected) return done(new UnsupportedLayer(`${this.what}: its media type says ${this.expected}, its bytes ${found}`));
    }
    done(null, chunk);
  }
}

/** A zlib failure that explainStreamError made one line of, with the layer it happened in. */
export function namingLayer(explained: Error, original: Error, what: string): Error {
  return explained !== original && explained instanceof BuildfleetError ? new BuildfleetError(explained.kind, `${what}: ${explained.message}`, { cause: original }) : explained;
}

const WRITE_BATCH_BYTES = 1024 * 1024;

/**
 * GNU tar writing one layer's diff dir as Docker's applier does: numeric owners, all permission
 * bits, every xattr (security.capability, trusted.overlay.opaque), and directory times set at
 * the end (children change them while extracting).
 */
function spawnExtractor(dir: string, what: string, signal: AbortSignal): { write(chunk: Buffer): Promise<void> | undefined; end(): Promise<void> } {
  // umask 022: the parents tar makes for an entry whose directory the layer does not list are 0755, as Docker's applier makes them.
  const child = spawn('sh', ['-c', 'umask 022 && exec tar "$@"', 'tar', '-x', '-f', '-', '-C', dir, '--numeric-owner', '--same-owner', '--same-permissions', '--xattrs', '--xattrs-include=*', '--delay-directory-restore'], {
    stdio: ['pipe', 'ignore', 'pipe'],
    signal,
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4000)));
  child.stdin.on('error', () => {}); // a tar that died is reported by its exit status
  // 'close', not 'exit' or the abort's 'error': only then is tar gone and its files safe to remove.
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', () => {});
    child.once('close', (code, sig) => {
      if (code === 0) resolve();
      else reject(new BuildfleetError('environment', `${what}: tar ${sig ? `killed by ${sig}` : `exited ${code}`}: ${stderr.trim().split('\n').find((line) => !/Exiting with failure status/.test(line)) ?? ''}`));
    });
  });
  exited.catch(() => {});
  // A layer of small files comes as hundreds of thousands of headers and short payloads: written
  // one by one, each is a syscall and a wakeup of tar. Corked, they go out as one writev per batch.
  let batched = 0;
  return {
    write(chunk) {
      if (batched === 0) child.stdin.cork();
      child.stdin.write(chunk);
      batched += chunk.length;
      if (batched < WRITE_BATCH_BYTES) return undefined;
      batched = 0;
      child.stdin.uncork();
      if (!child.stdin.writableNeedDrain) return undefined;
      return Promise.race([once(child.stdin, 'drain').then(() => {}), exited]);
    },
    async end() {
      if (batched > 0) child.stdin.uncork();
      child.stdin.end();
      await exited;
    },
  };
}
