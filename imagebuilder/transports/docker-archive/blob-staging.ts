import { createWriteStream, type WriteStream } from 'node:fs';
import { once, setMaxListeners } from 'node:events';
import { readFile, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BuildfleetError, isBuildfleetError } from '../../errors.js';
import { isIndexMediaType, layerCompression } from '../../oci/media-types.js';
import { ImageConfig, Manifest, parseJson, type Descriptor } from '../../oci/schemas.js';
import { DigestStream, digestHex, sha256Digest } from '../../oci/digest.js';
import type { BlobToStore } from '../types.js';
import { makeScratchDir, removeTemp } from '../temp-files.js';
import type { DockerArchiveImage } from './writer.js';

/** The image a destination has staged: ready to be written as an archive or loaded. */
export type StagedImage = {
  manifest: Manifest;
  config: ImageConfig;
  archive: DockerArchiveImage;
};

/**
 * Blobs and the manifest a destination has received, kept in a private directory until commit.
 * Shared by the docker-archive and docker-daemon destinations.
 *
 * Once remove()d (commit or abort), the directory stays gone: a put() after it fails, a put()
 * in flight is stopped and waited for before the directory is deleted, and nothing here ever
 * creates the directory again (files are opened with O_EXCL in it, never with mkdir -p).
 */
export class BlobStaging {
  private readonly blobs = new Map<string, { path: string; size: number }>();
  private staged: StagedImage | undefined;
  private removed = false;
  /** Aborted by remove(): stops the puts in flight. */
  private readonly stopping = new AbortController();
  private readonly inFlight = new Set<Promise<unknown>>();

  private constructor(
    readonly dir: string,
    private readonly label: string,
  ) {
    // One listener per put in flight: as many as the caller's concurrency, not a leak.
    setMaxListeners(Infinity, this.stopping.signal);
  }

  static async create(tmpDir: string | undefined, label: string): Promise<BlobStaging> {
    return new BlobStaging(await makeScratchDir(tmpDir ?? tmpdir(), 'staging'), label);
  }

  has(digest: string): boolean {
    return this.blobs.has(digest);
  }

  private removedError(): BuildfleetError {
    return new BuildfleetError('usage', `${this.label}: putBlob after commit() or abort(): the staging directory ${this.dir} is removed`);
  }

  put(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    const putting = this.putOnce(open, blob);
    this.inFlight.add(putting);
    const settled = () => this.inFlight.delete(putting);
    putting.then(settled, settled);
    return putting;
  }

  private async putOnce(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    if (blob.digest !== undefined && !blob.digest.startsWith('sha256:')) {
      throw new BuildfleetError('unsupported', `${this.label}: only sha256 blobs can be stored, not ${blob.digest}`);
    }
    if (this.removed) throw this.removedError();
    const known = blob.digest !== undefined ? this.blobs.get(blob.digest) : undefined;
    if (known && blob.digest) return { mediaType: blob.mediaType, digest: blob.digest, size: known.size };
    const what = `${this.label}: blob ${blob.digest ?? ''}`.trimEnd();
    for (let attempt = 1; ; attempt++) {
      const incoming = join(this.dir, `incoming-${randomBytes(6).toString('hex')}`);
      let file: WriteStream | undefined;
      try {
        const stream = await this.opened(open);
        const hasher = new DigestStream();
        // 'wx' (O_CREAT|O_EXCL): fails with ENOENT rather than writing anywhere if the directory is gone.
        file = createWriteStream(incoming, { flags: 'wx' });
        await pipeline(stream, hasher, file, { signal: this.stopping.signal });
        if (blob.size !== undefined && hasher.size !== blob.size) {
          throw new BuildfleetError('integrity', `${what}: got ${hasher.size} bytes, expected ${blob.size}`);
        }
        if (blob.digest !== undefined && hasher.digest !== blob.digest) {
          throw new BuildfleetError('integrity', `${what}: content digest ${hasher.digest} does not match ${blob.digest}`);
        }
        if (this.removed) throw this.removedError();
        const digest = hasher.digest;
        const size = hasher.size;
        const path = join(this.dir, digestHex(digest));
        if (this.blobs.has(digest)) await rm(incoming, { force: true });
        else await rename(incoming, path);
        this.blobs.set(digest, { path, size });
        return { mediaType: blob.mediaType, digest, size };
      } catch (err) {
        if (file) {
          // The file may still be opening: let it close before it is deleted, or it could outlive the rm.
          if (!file.closed) await once(file, 'close').catch(() => {});
          await rm(incoming, { force: true });
        }
        if (this.removed) throw this.removedError();
        // A source's connection can drop mid-blob: reopen it. Bad content is never retried.
        if (attempt < 3 && isBuildfleetError(err) && err.kind === 'network') continue;
        throw err;
      }
    }
  }

  /** The stream `open` gives, unless remove() comes first: then it is destroyed when it arrives. */
  private async opened(open: () => Promise<Readable>): Promise<Readable> {
    const signal = this.stopping.signal;
    if (signal.aborted) throw this.removedError();
    const opening = open();
    let onAbort: (() => void) | undefined;
    const stopped = new Promise<never>((_, reject) => {
      onAbort = () => reject(this.removedError());
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([opening, stopped]);
    } finally {
      signal.removeEventListener('abort', onAbort!);
      stopped.catch(() => {});
      // Lost the race: the stream came too late; free it (its error, if any, no one waits for).
      if (signal.aborted) opening.then((stream) => stream.destroy(), () => {});
    }
  }

  async putManifest(manifestBytes: Buffer, mediaType: string, repoTags: string[], options: { rejectZstd?: string } = {}): Promise<string> {
    if (isIndexMediaType(mediaType)) {
      throw new BuildfleetError('unsupported', `${this.label} holds one image, not an index: pick a platform (--platform OS/ARCH)`);
    }
    if (this.removed) throw new BuildfleetError('usage', `${this.label}: putManifest after commit() or abort()`);
    const manifest = parseJson(Manifest, manifestBytes, `${this.label}: manifest`);
    const missing = [manifest.config, ...manifest.layers].filter((d) => !this.blobs.has(d.digest)).map((d) => d.digest);
    if (missing.length > 0) {
      throw new BuildfleetError('format', `${this.label}: the manifest names blobs that were not stored: ${missing.join(', ')}`);
    }
    const configPath = this.blobs.get(manifest.config.digest)!.path;
    const config = parseJson(ImageConfig, await readFile(configPath), `${this.label}: image config`);
    if (config.rootfs.diff_ids.length !== manifest.layers.length) {
      throw new BuildfleetError(
        'format',
        `${this.label}: the manifest has ${manifest.layers.length} layers but the image config has ${config.rootfs.diff_ids.length} diff_ids`,
      );
    }
    if (options.rejectZstd) {
      const zstd = manifest.layers.find((layer) => layerCompression(layer.mediaType) === 'zstd');
      if (zstd) throw new BuildfleetError('unsupported', `${this.label}: ${options.rejectZstd} (layer ${zstd.digest}); use gzip or no compression`);
    }
    this.staged = {
      manifest,
      config,
      archive: {
        configPath,
        configDigest: manifest.config.digest,
        layerPaths: manifest.layers.map((l) => this.blobs.get(l.digest)!.path),
        layerDigests: manifest.layers.map((l) => l.digest),
        repoTags,
      },
    };
    return sha256Digest(manifestBytes);
  }

  get image(): StagedImage {
    if (!this.staged) throw new BuildfleetError('usage', `${this.label}: commit() before putManifest()`);
    return this.staged;
  }

  /** Deletes the directory, once the puts in flight (stopped here) have settled. Safe to call twice. */
  async remove(): Promise<void> {
    this.removed = true;
    this.stopping.abort();
    await Promise.allSettled([...this.inFlight]);
    await removeTemp(this.dir);
  }
}
