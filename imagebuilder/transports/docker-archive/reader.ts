import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { BuildfleetError, isBuildfleetError } from '../../errors.js';
import { MediaType, sniffCompression, type Compression } from '../../oci/media-types.js';
import { ImageConfig, parseJson, type Descriptor } from '../../oci/schemas.js';
import { VerifyingStream, sha256Digest } from '../../oci/digest.js';
import { formatPlatform } from '../../oci/platform.js';
import { parseRegistryReference, type ImageReference } from '../../oci/reference.js';
import { indexTar, openMemberStream, readMember, readMemberHead, resolveMember, type TarIndex, type TarMember } from '../tar-index.js';
import type { ImageSource, OpenBlobOptions, ResolveOptions, ResolvedImage } from '../types.js';

/**
 * Reading a `docker save` tarball as an image source. The tar is indexed once (headers only, see
 * tar-index.ts) and members are read by offset. Both save formats work: Docker <= 24
 * (`<id>/layer.tar`, `<hex>.json`) and Docker 25+ (an OCI layout inside, `blobs/sha256/<hex>`,
 * maybe gzip layers, legacy paths as symlinks). Shared by the docker-archive and docker-daemon
 * sources.
 */

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
