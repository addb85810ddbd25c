import { createWriteStream } from 'node:fs';
import { mkdir, rename, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { BuildfleetError, isBuildfleetError } from '../errors.js';
import type { Descriptor } from '../oci/schemas.js';
import type { ArchiveReference } from '../oci/reference.js';
import { tempPathBeside } from './files.js';
import { removeTemp, sweepDeadOwners, untrackTemp } from './temp-files.js';
import { BlobStaging } from './docker-archive/blob-staging.js';
import { openDockerArchiveFile } from './docker-archive/reader.js';
import { repoTagsFor, writeDockerArchive } from './docker-archive/writer.js';
import type { BlobToStore, DestinationPreferences, ImageDestination, ImageSource } from './types.js';

/**
 * docker-archive: the tarball of `docker save` / `docker load`.
 *
 * Reading: the tar is indexed once (headers only, see tar-index.ts) and members are read by
 * offset. Both save formats work: Docker <= 24 (`<id>/layer.tar`, `<hex>.json`) and Docker 25+
 * (an OCI layout inside, `blobs/sha256/<hex>`, maybe gzip layers, legacy paths as symlinks).
 * Writing: blobs are staged in a private directory, and commit() writes the whole tar beside the
 * destination path and renames it into place, so a reader never sees a partial archive.
 */

// The module others import; the parts shared with docker-daemon.ts live in docker-archive/:
//   reader.ts        reading a docker save tarball (openDockerArchiveFile)
//   writer.ts        writing one (dockerArchiveChunks, writeDockerArchive, repoTagsFor)
//   blob-staging.ts  blobs and the manifest a destination holds until commit (BlobStaging)

export { normaliseRepoTag, openDockerArchiveFile, type ArchiveManifestEntry, type ArchiveSelector } from './docker-archive/reader.js';
export { dockerArchiveChunks, repoTagsFor, writeDockerArchive, type DockerArchiveImage } from './docker-archive/writer.js';
export { BlobStaging, type StagedImage } from './docker-archive/blob-staging.js';

/** The part of TransportOptions (transports/index.ts) the file transports use. */
export type ArchiveOptions = { tmpDir?: string };

export async function openArchiveSource(ref: ArchiveReference, _options: ArchiveOptions = {}): Promise<ImageSource> {
  return openDockerArchiveFile(ref.path, ref, { ...(ref.name !== undefined && { name: ref.name }), ...(ref.tag !== undefined && { tag: ref.tag }) });
}

class ArchiveDestination implements ImageDestination {
  readonly preferences: DestinationPreferences = { manifestFormat: 'docker', layerCompression: 'none' };
  private tempPath: string | undefined;
  private done = false;

  constructor(
    readonly reference: ArchiveReference,
    private readonly staging: BlobStaging,
  ) {}

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    return this.staging.has(descriptor.digest);
  }

  putBlob(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    return this.staging.put(open, blob);
  }

  putManifest(manifestBytes: Buffer, mediaType: string): Promise<string> {
    return this.staging.putManifest(manifestBytes, mediaType, repoTagsFor(this.reference.name, this.reference.tag));
  }

  async commit(): Promise<void> {
    const image = this.staging.image;
    const target = this.reference.path;
    await mkdir(dirname(target), { recursive: true });
    // A killed writer's half archive would lie beside PATH forever.
    await sweepDeadOwners(dirname(target), (prefix) => prefix === `.${basename(target)}.tmp-`);
    const temp = tempPathBeside(target);
    this.tempPath = temp;
    try {
      await writeDockerArchive(createWriteStream(temp, { flags: 'wx' }), image.archive);
      // Like `docker save -o`, an existing file is replaced.
      await rename(temp, target);
      this.tempPath = undefined;
      untrackTemp(temp);
    } catch (err) {
      await removeTemp(temp);
      this.tempPath = undefined;
      if (isBuildfleetError(err)) throw err;
      throw new BuildfleetError('environment', `cannot write docker-archive ${target}: ${(err as Error).message}`, { cause: err });
    }
    this.done = true;
    await this.staging.remove();
  }

  async abort(): Promise<void> {
    if (this.tempPath) await removeTemp(this.tempPath);
    this.tempPath = undefined;
    if (!this.done) await this.staging.remove();
  }
}

export async function openArchiveDestination(ref: ArchiveReference, options: ArchiveOptions = {}): Promise<ImageDestination> {
  await checkArchiveTarget(ref.path);
  const staging = await BlobStaging.create(options.tmpDir, `docker-archive ${ref.path}`);
  return new ArchiveDestination(ref, staging);
}

/**
 * Before anything is read from the source: a path that can never become the archive fails now,
 * not after the whole image was downloaded and staged.
 */
async function checkArchiveTarget(path: string): Promise<void> {
  const target = await stat(path).catch(() => undefined);
  if (target?.isDirectory()) {
    throw new BuildfleetError('usage', `docker-archive:${path}: ${path} is a directory; name the archive file to write (e.g. ${join(path, 'image.tar')})`);
  }
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const found = await stat(dir).catch(() => undefined);
    if (found && !found.isDirectory()) throw new BuildfleetError('usage', `docker-archive:${path}: ${dir} is not a directory`);
    if (found || dir === dirname(dir)) return;
  }
}
