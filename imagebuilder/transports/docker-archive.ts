import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BuildfleetError, isBuildfleetError } from '../oci/errors.js';
import { MediaType, isIndexMediaType, layerCompression, sniffCompression, type Compression } from '../oci/media-types.js';
import { ImageConfig, Manifest, parseJson, type Descriptor } from '../oci/schemas.js';
import { VerifyingStream, digestHex, sha256Digest } from '../oci/digest.js';
import { formatPlatform } from '../oci/platform.js';
import { parseRegistryReference, type ArchiveReference, type ImageReference } from '../oci/reference.js';
import { tempPathBeside, writeFileAtomically } from './files.js';
import { encodeTarHeader, indexTar, openMemberStream, readMember, readMemberHead, resolveMember, tarEnd, tarPadding, type TarIndex, type TarMember } from './tar-index.js';
import type { BlobToStore, DestinationPreferences, ImageDestination, ImageSource, OpenBlobOptions, ResolveOptions, ResolvedImage } from './types.js';

/**
 * docker-archive: the tarball of `docker save` / `docker load`.
 *
 * Reading: the tar is indexed once (headers only, see tar-index.ts) and members are read by
 * offset. Both save formats work: Docker <= 24 (`<id>/layer.tar`, `<hex>.json`) and Docker 25+
 * (an OCI layout inside, `blobs/sha256/<hex>`, maybe gzip layers, legacy paths as symlinks).
 * Writing: blobs are staged in a private directory, and commit() writes the whole tar beside the
 * destination path and renames it into place, so a reader never sees a partial archive.
 */

/** The part of TransportOptions (transports/index.ts) the file transports use. */
export type ArchiveOptions = { tmpDir?: string };

const ManifestEntry = {
  parse(value: unknown, what: string): ArchiveManifestEntry[] {
    if (!Array.isArray(value)) throw new BuildfleetError('format', `${what} is malformed: expected a JSON array`);
    return value.map((entry: unknown, i) => {
      const e = entry as Partial<ArchiveManifestEntry> | null;
      if (!e || typeof e.Config !== 'string' || !Array.isArray(e.Layers) || !e.Layers.every((l) => typeof l === 'string')) {
        throw new BuildfleetError('format', `${what} is malformed at ${i}: needs Config (a path) and Layers (paths)`);
      }
      const repoTags = Array.isArray(e.RepoTags) ? e.RepoTags.filter((t): t is string => typeof t === 'string') : [];
      return { Config: e.Config, RepoTags: repoTags, Layers: e.Layers };
    });
  },
};

/** One entry of a docker-archive's manifest.json. */
export type ArchiveManifestEntry = { Config: string; RepoTags: string[]; Layers: string[] };

/** Which image of a multi-image archive to read. Empty: the only one. */
export type ArchiveSelector = { name?: string; tag?: string; configDigest?: string };

/** `busybox:latest` and `docker.io/library/busybox:latest` name the same image. */
export function normaliseRepoTag(text: string): string {
  try {
    const ref = parseRegistryReference(text);
    return `${ref.registry}/${ref.repository}:${ref.tag ?? 'latest'}`;
  } catch {
    return text;
  }
}

type StoredBlob = { member: TarMember; what: string } | { bytes: Buffer; what: string };

type ArchiveLayer = { path: string; member: TarMember; compression: Compression; diffId: string };

const layerMediaTypeOf: Record<Compression, string> = {
  none: MediaType.dockerLayer,
  gzip: MediaType.dockerLayerGzip,
  zstd: MediaType.dockerLayerZstd,
};

class ArchiveSource implements ImageSource {
  private resolved: ResolvedImage | undefined;
  private readonly blobs = new Map<string, StoredBlob>();
  private readonly hashes = new Map<string, Promise<string>>();
  private closed = false;

  constructor(
    readonly reference: ImageReference,
    private readonly index: TarIndex,
    private readonly label: string,
    private readonly configBytes: Buffer,
    private readonly config: ImageConfig,
    private readonly layers: ArchiveLayer[],
    private readonly onClose: () => Promise<void>,
  ) {}

  async resolve(options: ResolveOptions = {}): Promise<ResolvedImage> {
    if (options.platform) {
      const { os, architecture } = options.platform;
      if (this.config.os !== os || this.config.architecture !== architecture) {
        throw new BuildfleetError(
          'not-found',
          `${this.label} holds a ${formatPlatform({ os: this.config.os, architecture: this.config.architecture })} image, not ${formatPlatform(options.platform)}`,
        );
      }
    }
    if (this.resolved) return this.resolved;
    const configDigest = sha256Digest(this.configBytes);
    this.blobs.set(configDigest, { bytes: this.configBytes, what: `${this.label}: image config` });
    const layers: Descriptor[] = [];
    for (const [i, layer] of this.layers.entries()) {
      const digest = await this.layerDigest(layer);
      const what = `${this.label}: layer ${i + 1} (${layer.path})`;
      layers.push({ mediaType: layerMediaTypeOf[layer.compression], size: layer.member.size, digest });
      if (!this.blobs.has(digest)) this.blobs.set(digest, { member: layer.member, what });
    }
    // Fixed key order: the same archive always gives the same manifest bytes and digest.
    const manifest = {
      schemaVersion: 2 as const,
      mediaType: MediaType.dockerManifest,
      config: { mediaType: MediaType.dockerConfig, size: this.configBytes.length, digest: configDigest },
      layers,
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    this.resolved = {
      manifest,
      manifestBytes,
      manifestDigest: sha256Digest(manifestBytes),
      manifestMediaType: MediaType.dockerManifest,
      config: this.config,
      configBytes: this.configBytes,
    };
    return this.resolved;
  }

  /**
   * The digest a layer's stored bytes should have. An uncompressed layer's is its diff_id; a
   * layer stored content-addressed (blobs/sha256/HEX) is named by its digest. Both are claims
   * that openBlob verifies on every read, so a corrupt member fails there, not silently. Other
   * compressed layers are hashed once (cached).
   */
  private layerDigest(layer: ArchiveLayer): Promise<string> {
    if (layer.compression === 'none') return Promise.resolve(layer.diffId);
    const named = /(?:^|\/)blobs\/sha256\/([a-f0-9]{64})$/.exec(layer.member.name);
    if (named) return Promise.resolve(`sha256:${named[1]}`);
    let hashing = this.hashes.get(layer.member.name);
    if (!hashing) {
      hashing = (async () => {
        const hash = createHash('sha256');
        for await (const chunk of openMemberStream(this.index, layer.member)) hash.update(chunk as Buffer);
        return `sha256:${hash.digest('hex')}`;
      })();
      this.hashes.set(layer.member.name, hashing);
    }
    return hashing;
  }

  async openBlob(descriptor: Descriptor, options: OpenBlobOptions = {}): Promise<Readable> {
    if (this.closed) throw new Error(`${this.label}: openBlob after close`);
    if (!this.resolved) await this.resolve();
    const blob = this.blobs.get(descriptor.digest);
    if (!blob) throw new BuildfleetError('not-found', `${this.label}: no blob ${descriptor.digest} in this image`);
    const verifier = new VerifyingStream(descriptor.digest, descriptor.size, blob.what, { hash: options.verify !== false });
    const source = 'bytes' in blob ? Readable.from([blob.bytes]) : openMemberStream(this.index, blob.member);
    source.on('error', (err) => verifier.destroy(err));
    verifier.on('close', () => source.destroy());
    return source.pipe(verifier);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.onClose();
  }
}

function describeEntries(entries: ArchiveManifestEntry[]): string {
  return entries.map((e) => (e.RepoTags.length > 0 ? e.RepoTags.join(', ') : `untagged ${e.Config}`)).join('; ');
}

async function selectEntry(
  entries: ArchiveManifestEntry[],
  selector: ArchiveSelector,
  label: string,
  configDigestOf: (entry: ArchiveManifestEntry) => Promise<string>,
): Promise<ArchiveManifestEntry> {
  if (entries.length === 0) throw new BuildfleetError('format', `${label}: manifest.json lists no images`);
  if (selector.configDigest) {
    for (const entry of entries) if ((await configDigestOf(entry)) === selector.configDigest) return entry;
    if (entries.length === 1) return entries[0]!;
    throw new BuildfleetError('not-found', `${label} has no image ${selector.configDigest} (it has: ${describeEntries(entries)})`);
  }
  if (selector.name) {
    const wanted = normaliseRepoTag(`${selector.name}:${selector.tag ?? 'latest'}`);
    const found = entries.find((e) => e.RepoTags.some((t) => normaliseRepoTag(t) === wanted));
    if (found) return found;
    throw new BuildfleetError('not-found', `${label} has no image ${selector.name}:${selector.tag ?? 'latest'} (it has: ${describeEntries(entries)})`);
  }
  if (entries.length > 1) {
    throw new BuildfleetError(
      'usage',
      `${label} holds ${entries.length} images; name one as docker-archive:PATH:NAME:TAG (it has: ${describeEntries(entries)})`,
    );
  }
  return entries[0]!;
}

/**
 * Opens a docker-archive file as an image source. `onClose` runs when the source is closed (the
 * daemon source deletes its spooled `docker save` there).
 */
export async function openDockerArchiveFile(
  path: string,
  reference: ImageReference,
  selector: ArchiveSelector = {},
  onClose: () => Promise<void> = async () => {},
  label = `docker-archive ${path}`,
): Promise<ImageSource> {
  const index = await indexTar(path);
  const manifestMember = resolveMember(index, 'manifest.json');
  if (!manifestMember) {
    const hint = index.members.has('index.json') ? ' (it has index.json: an OCI archive, not a docker-archive)' : '';
    throw new BuildfleetError('format', `${label}: no manifest.json in the archive, not a docker save tarball${hint}`);
  }
  const what = `${label}: manifest.json`;
  let raw: unknown;
  try {
    raw = JSON.parse((await readMember(index, manifestMember)).toString('utf8'));
  } catch (err) {
    if (isBuildfleetError(err)) throw err;
    throw new BuildfleetError('format', `${what} is not valid JSON: ${(err as Error).message}`);
  }
  const entries = ManifestEntry.parse(raw, what);

  const memberOf = (memberPath: string, role: string): TarMember => {
    const member = resolveMember(index, memberPath);
    if (!member || member.type !== 'file') {
      throw new BuildfleetError('format', `${label}: ${role} ${memberPath} named in manifest.json is not in the archive`);
    }
    return member;
  };
  const configDigestOf = async (entry: ArchiveManifestEntry) => sha256Digest(await readMember(index, memberOf(entry.Config, 'config')));

  const entry = await selectEntry(entries, selector, label, configDigestOf);
  const configBytes = await readMember(index, memberOf(entry.Config, 'config'));
  const config = parseJson(ImageConfig, configBytes, `${label}: image config ${entry.Config}`);
  const diffIds = config.rootfs.diff_ids;
  if (entry.Layers.length !== diffIds.length) {
    throw new BuildfleetError(
      'format',
      `${label}: manifest.json lists ${entry.Layers.length} layers but the image config has ${diffIds.length} diff_ids`,
    );
  }
  const layers: ArchiveLayer[] = [];
  for (const [i, layerPath] of entry.Layers.entries()) {
    const member = memberOf(layerPath, 'layer');
    const compression = sniffCompression(await readMemberHead(index, member, 4));
    layers.push({ path: layerPath, member, compression, diffId: diffIds[i]! });
  }
  return new ArchiveSource(reference, index, label, configBytes, config, layers, onClose);
}

export async function openArchiveSource(ref: ArchiveReference, _options: ArchiveOptions = {}): Promise<ImageSource> {
  return openDockerArchiveFile(ref.path, ref, { ...(ref.name !== undefined && { name: ref.name }), ...(ref.tag !== undefined && { tag: ref.tag }) });
}

// ---------------------------------------------------------------------------------------------
// Writing

export type DockerArchiveImage = {
  configPath: string;
  /** sha256 of the config file; computed when absent. */
  configDigest?: string;
  /** Layer files in order, stored in the archive as they are (plain tar or gzip). */
  layerPaths: string[];
  /** sha256 of each layer file; computed when absent. */
  layerDigests?: string[];
  /** e.g. ["x:1"]; empty for an untagged image. */
  repoTags: string[];
};

async function fileDigest(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * The bytes of a docker-archive, as a stream of chunks: `blobs/sha256/<hex>` members for the
 * config and the layers (each written once), `manifest.json` and `repositories`. Docker 20.10's
 * `docker load` and our reader both take it. Deterministic: fixed order, mtime 0, root owner.
 */
export async function* dockerArchiveChunks(image: DockerArchiveImage): AsyncGenerator<Buffer> {
  const configDigest = image.configDigest ?? (await fileDigest(image.configPath));
  const layerDigests = image.layerDigests ?? (await Promise.all(image.layerPaths.map(fileDigest)));
  if (layerDigests.length !== image.layerPaths.length) throw new Error('dockerArchiveChunks: one digest per layer path expected');
  const blobPath = (digest: string) => `blobs/sha256/${digestHex(digest)}`;

  yield encodeTarHeader({ name: 'blobs', size: 0, type: 'directory' });
  yield encodeTarHeader({ name: 'blobs/sha256', size: 0, type: 'directory' });
  const written = new Set<string>();
  const files: Array<[string, string]> = [[blobPath(configDigest), image.configPath]];
  for (const [i, path] of image.layerPaths.entries()) files.push([blobPath(layerDigests[i]!), path]);
  for (const [name, path] of files) {
    if (written.has(name)) continue;
    written.add(name);
    const { size } = await stat(path);
    yield encodeTarHeader({ name, size, type: 'file' });
    let seen = 0;
    for await (const chunk of createReadStream(path)) {
      const buf = chunk as Buffer;
      seen += buf.length;
      if (seen > size) break;
      yield buf;
    }
    if (seen !== size) throw new BuildfleetError('environment', `${path} changed size while being archived (${size} -> ${seen} bytes)`);
    yield tarPadding(size);
  }
  const manifest = [{ Config: blobPath(configDigest), RepoTags: image.repoTags, Layers: layerDigests.map(blobPath) }];
  const repositories: Record<string, Record<string, string>> = {};
  const top = layerDigests[layerDigests.length - 1];
  for (const repoTag of image.repoTags) {
    const colon = repoTag.lastIndexOf(':');
    const [name, tag] = colon > repoTag.lastIndexOf('/') ? [repoTag.slice(0, colon), repoTag.slice(colon + 1)] : [repoTag, 'latest'];
    if (top) (repositories[name] ??= {})[tag] = digestHex(top);
  }
  for (const [name, value] of [['manifest.json', manifest], ['repositories', repositories]] as const) {
    const bytes = Buffer.from(JSON.stringify(value) + '\n');
    yield encodeTarHeader({ name, size: bytes.length, type: 'file' });
    yield bytes;
    yield tarPadding(bytes.length);
  }
  yield tarEnd;
}

/** Writes a docker-archive into `out` (a file, or the body of `docker load`). */
export async function writeDockerArchive(out: Writable, image: DockerArchiveImage): Promise<void> {
  await pipeline(Readable.from(dockerArchiveChunks(image)), out);
}

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

/** The RepoTags a docker-archive or docker load should record for a reference. */
export function repoTagsFor(name: string | undefined, tag: string | undefined): string[] {
  return name ? [`${name}:${tag ?? 'latest'}`] : [];
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
    const temp = tempPathBeside(target);
    this.tempPath = temp;
    try {
      await writeDockerArchive(createWriteStream(temp, { flags: 'wx' }), image.archive);
      // Like `docker save -o`, an existing file is replaced.
      await rename(temp, target);
      this.tempPath = undefined;
    } catch (err) {
      await rm(temp, { force: true });
      this.tempPath = undefined;
      if (isBuildfleetError(err)) throw err;
      throw new BuildfleetError('environment', `cannot write docker-archive ${target}: ${(err as Error).message}`, { cause: err });
    }
    this.done = true;
    await this.staging.remove();
  }

  async abort(): Promise<void> {
    if (this.tempPath) await rm(this.tempPath, { force: true });
    this.tempPath = undefined;
    if (!this.done) await this.staging.remove();
  }
}

export async function openArchiveDestination(ref: ArchiveReference, options: ArchiveOptions = {}): Promise<ImageDestination> {
  const staging = await BlobStaging.create(options.tmpDir, `docker-archive ${ref.path}`);
  return new ArchiveDestination(ref, staging);
}
