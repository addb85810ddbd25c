import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { BuildfleetError, isBuildfleetError } from '../imagebuilder/errors.js';
import { sha256Digest } from '../imagebuilder/oci/digest.js';
import { MediaType } from '../imagebuilder/oci/media-types.js';
import { RegistryClient, type RegistryOptions } from '../imagebuilder/registry/index.js';
import { registryTag, type ToolchainKey } from './key.js';
import { unpackInto, type Codec } from './pack.js';

/**
 * Toolchains in a registry repository, as OCI artifacts: an image manifest with its own
 * `artifactType`, the empty config, and one tar+gzip (or tar+zstd) layer of the tree; tagged
 * `TOOL-VERSION-OS-ARCH-LIBC`, with the key in annotations (what a pull checks).
 */

export const TOOLCHAIN_ARTIFACT_TYPE = 'application/vnd.buildfleet.toolchain.v1';
export const EMPTY_CONFIG_TYPE = 'application/vnd.oci.empty.v1+json';
const EMPTY_CONFIG = Buffer.from('{}');
const EMPTY_DIGEST = sha256Digest(EMPTY_CONFIG);
const LAYER_TYPES: Record<Codec, string> = { gzip: MediaType.ociLayerGzip, zstd: MediaType.ociLayerZstd };
const ANNOTATION = 'dev.buildfleet.toolchain';

type ArtifactManifest = {
  schemaVersion: 2;
  mediaType: string;
  artifactType: string;
  config: { mediaType: string; digest: string; size: number; data?: string };
  layers: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>;
  annotations: Record<string, string>;
};

function keyAnnotations(key: ToolchainKey): Record<string, string> {
  return {
    [`${ANNOTATION}.tool`]: key.tool,
    [`${ANNOTATION}.version`]: key.version,
    [`${ANNOTATION}.os`]: key.os,
    [`${ANNOTATION}.architecture`]: key.architecture,
    [`${ANNOTATION}.libc`]: key.libc,
  };
}

/** The manifest of a toolchain artifact (pure: tests and push share it). */
export function artifactManifest(key: ToolchainKey, layer: { digest: string; size: number }, codec: Codec, created = new Date()): ArtifactManifest {
  return {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    artifactType: TOOLCHAIN_ARTIFACT_TYPE,
    config: { mediaType: EMPTY_CONFIG_TYPE, digest: EMPTY_DIGEST, size: EMPTY_CONFIG.length, data: EMPTY_CONFIG.toString('base64') },
    layers: [{ mediaType: LAYER_TYPES[codec], digest: layer.digest, size: layer.size }],
    annotations: { ...keyAnnotations(key), 'org.opencontainers.image.created': created.toISOString() },
  };
}

export type RemoteLayer = { digest: string; size: number; codec: Codec };

/** The layer of the key's artifact, or undefined when the repository has none for this key. */
export function layerOf(manifest: ArtifactManifest, key: ToolchainKey, where: string): RemoteLayer | undefined {
  if (manifest.artifactType !== TOOLCHAIN_ARTIFACT_TYPE) throw new BuildfleetError('format', `${where} is not a buildfleet toolchain (artifactType ${JSON.stringify(manifest.artifactType ?? null)})`);
  const expected = keyAnnotations(key);
  // Another key that maps to the same tag: not ours.
  if (Object.entries(expected).some(([name, value]) => manifest.annotations?.[name] !== value)) return undefined;
  const layer = manifest.layers?.[0];
  const codec = (Object.keys(LAYER_TYPES) as Codec[]).find((c) => LAYER_TYPES[c] === layer?.mediaType);
  if (!layer || manifest.layers.length !== 1 || !codec) throw new BuildfleetError('format', `${where} must have exactly one tar+gzip or tar+zstd layer`);
  return { digest: layer.digest, size: layer.size, codec };
}

export class RemoteStore {
  readonly client: RegistryClient;
  private readonly ownsClient: boolean;

  constructor(
    readonly host: string,
    readonly repo: string,
    options: RegistryOptions | RegistryClient = {},
  ) {
    this.ownsClient = !(options instanceof RegistryClient);
    this.client = options instanceof RegistryClient ? options : new RegistryClient(host, options);
  }

  describe(key: ToolchainKey): string {
    return `${this.host}/${this.repo}:${registryTag(key)}`;
  }

  /** The key's layer in the registry, or undefined when it has none. */
  async find(key: ToolchainKey): Promise<RemoteLayer | undefined> {
    let fetched;
    try {
      fetched = await this.client.getManifest(this.repo, registryTag(key));
    } catch (err) {
      if (isBuildfleetError(err) && err.kind === 'not-found') return undefined;
      throw err;
    }
    let manifest: ArtifactManifest;
    try {
      manifest = JSON.parse(fetched.bytes.toString('utf8')) as ArtifactManifest;
    } catch {
      throw new BuildfleetError('format', `${this.describe(key)} is not JSON`);
    }
    return layerOf(manifest, key, this.describe(key));
  }

  /** Downloads the layer (its digest verified while it streams) and extracts it into `dest`. */
  async fetchInto(layer: RemoteLayer, dest: string): Promise<void> {
    const blob = await this.client.getBlob(this.repo, layer);
    await unpackInto(blob, dest, layer.codec);
  }

  /** Pushes the packed tree in `file`: the empty config, the layer, then the manifest under the key's tag. */
  async push(key: ToolchainKey, file: string, layer: { digest: string; size: number }, codec: Codec): Promise<string> {
    if ((await this.client.hasBlob(this.repo, EMPTY_DIGEST)) === undefined) {
      await this.client.uploadBlob(this.repo, async () => Readable.from([EMPTY_CONFIG]), { digest: EMPTY_DIGEST, size: EMPTY_CONFIG.length });
    }
    if ((await this.client.hasBlob(this.repo, layer.digest)) === undefined) {
      await this.client.uploadBlob(this.repo, async () => createReadStream(file, { highWaterMark: 1 << 20 }), layer);
    }
    const manifest = Buffer.from(JSON.stringify(artifactManifest(key, layer, codec)));
    return this.client.putManifest(this.repo, registryTag(key), manifest, MediaType.ociManifest);
  }

  async close(): Promise<void> {
    if (this.ownsClient) await this.client.close();
  }
}
