import { mkdir, mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { BuildfleetError, isBuildfleetError } from '../../oci/errors.js';
import { isIndexMediaType, layerCompression } from '../../oci/media-types.js';
import { ImageConfig, Manifest, parseJson, type Descriptor } from '../../oci/schemas.js';
import { digestHex, sha256Digest } from '../../oci/digest.js';
import { writeFileAtomically } from '../files.js';
import type { BlobToStore } from '../types.js';
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
 */
export class BlobStaging {
  private readonly blobs = new Map<string, { path: string; size: number }>();
  private staged: StagedImage | undefined;
  private removed = false;

  private constructor(
    readonly dir: string,
    private readonly label: string,
  ) {}

  static async create(tmpDir: string | undefined, label: string): Promise<BlobStaging> {
    const base = tmpDir ?? tmpdir();
    await mkdir(base, { recursive: true });
    return new BlobStaging(await mkdtemp(join(base, 'buildfleet-staging-')), label);
  }

  has(digest: string): boolean {
    return this.blobs.has(digest);
  }

  async put(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    if (blob.digest !== undefined && !blob.digest.startsWith('sha256:')) {
      throw new BuildfleetError('unsupported', `${this.label}: only sha256 blobs can be stored, not ${blob.digest}`);
    }
    if (this.removed) throw new BuildfleetError('usage', `${this.label}: putBlob after commit() or abort()`);
    const known = blob.digest !== undefined ? this.blobs.get(blob.digest) : undefined;
    if (known && blob.digest) return { mediaType: blob.mediaType, digest: blob.digest, size: known.size };
    for (let attempt = 1; ; attempt++) {
      const incoming = join(this.dir, `incoming-${randomBytes(6).toString('hex')}`);
      try {
        const what = `${this.label}: blob ${blob.digest ?? ''}`.trimEnd();
        const stream = await open();
        const { digest, size } = await writeFileAtomically(stream, incoming, {
          ...(blob.digest !== undefined && { digest: blob.digest }),
          ...(blob.size !== undefined && { size: blob.size }),
          what,
        });
        const path = join(this.dir, digestHex(digest));
        if (this.blobs.has(digest)) await rm(incoming, { force: true });
        else await rename(incoming, path);
        this.blobs.set(digest, { path, size });
        return { mediaType: blob.mediaType, digest, size };
      } catch (err) {
        await rm(incoming, { force: true });
        // A source's connection can drop mid-blob: reopen it. Bad content is never retried.
        if (attempt < 3 && isBuildfleetError(err) && err.kind === 'network') continue;
        throw err;
      }
    }
  }

  async putManifest(manifestBytes: Buffer, mediaType: string, repoTags: string[], options: { rejectZstd?: string } = {}): Promise<string> {
    if (isIndexMediaType(mediaType)) {
      throw new BuildfleetError('unsupported', `${this.label} holds one image, not an index: pick a platform (--platform OS/ARCH)`);
    }
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

  async remove(): Promise<void> {
    this.removed = true;
    await rm(this.dir, { recursive: true, force: true });
  }
}
