import type { Readable } from 'node:stream';
import { sha256Digest } from '../oci/digest.js';
import { BuildfleetError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import { hostPlatform, selectPlatform } from '../oci/platform.js';
import { formatReference, type ImageReference, type RegistryReference } from '../oci/reference.js';
import { ImageConfig, parseAnyManifest, parseJson, type Descriptor } from '../oci/schemas.js';
import { endpointFor, RegistryClient, type RegistryOptions } from '../registry/index.js';
import type { BlobToStore, DestinationPreferences, ImageDestination, ImageSource, OpenBlobOptions, ResolvedImage, ResolveOptions } from './types.js';

/** Config blobs bigger than this are refused: a config is JSON of a few KB, history included. */
const maxConfigBytes = 16 << 20;

/**
 * One client per registry host and options, so a source and a destination on the same
 * registry share connections, tokens and the concurrency limit. Functions in the options
 * (onRequest) take part in the key by identity.
 */
const clients = new Map<string, RegistryClient>();
const functionIds = new WeakMap<object, number>();
let nextFunctionId = 1;

function cacheKey(host: string, options: RegistryOptions): string {
  return JSON.stringify([host, options], (_key, value: unknown) => {
    if (typeof value !== 'function') return value;
    let id = functionIds.get(value);
    if (id === undefined) functionIds.set(value, (id = nextFunctionId++));
    return `function#${id}`;
  });
}

export function registryClientFor(host: string, options: RegistryOptions): RegistryClient {
  const key = cacheKey(host, options);
  let client = clients.get(key);
  if (!client) {
    client = new RegistryClient(host, options);
    clients.set(key, client);
  }
  return client;
}

/** Closes every cached client's connections (end of a CLI run, end of a test file). */
export async function closeRegistryClients(): Promise<void> {
  const all = [...clients.values()];
  clients.clear();
  await Promise.all(all.map((client) => client.close()));
}

async function readAll(stream: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      stream.destroy();
      throw new BuildfleetError('format', `${what} is larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * A registry image as a source resolves it: the manifest by digest or tag (through an index, the
 * entry for the wanted platform), and its config, bounded and verified by digest. Shared with the
 * direct pre-pull, which has a client of its own.
 */
export async function resolveRegistryImage(client: RegistryClient, ref: RegistryReference, resolveOptions: ResolveOptions = {}): Promise<ResolvedImage> {
  const repo = ref.repository;
  const name = formatReference(ref);
  const top = await client.getManifest(repo, ref.digest ?? ref.tag ?? 'latest');
  let fetched = top;
  let parsed = parseAnyManifest(top.bytes, top.mediaType, `manifest of ${name}`);
  let index: ResolvedImage['index'];
  if (parsed.kind === 'index') {
    index = { index: parsed.index, bytes: top.bytes, digest: top.digest, mediaType: top.mediaType };
    const entry = selectPlatform(parsed.index, resolveOptions.platform ?? hostPlatform(), `image index ${name}`);
    fetched = await client.getManifest(repo, entry.digest);
    parsed = parseAnyManifest(fetched.bytes, fetched.mediaType, `manifest ${entry.digest} of ${name}`);
    if (parsed.kind === 'index') {
      throw new BuildfleetError('unsupported', `${name}: index entry ${entry.digest} is itself an index (nested indexes are not supported)`);
    }
  }
  const manifest = parsed.manifest;
  const blob = await client.getBlob(repo, manifest.config);
  const configBytes = await readAll(blob, maxConfigBytes, `config ${manifest.config.digest} of ${name}`);
  const config = parseJson(ImageConfig, configBytes, `config ${manifest.config.digest} of ${name}`);
  return {
    manifest,
    manifestBytes: fetched.bytes,
    manifestDigest: fetched.digest,
    manifestMediaType: fetched.mediaType,
    config,
    configBytes,
    ...(index && { index }),
  };
}

export async function openRegistrySource(ref: RegistryReference, options: RegistryOptions): Promise<ImageSource> {
  const client = registryClientFor(ref.registry, options);
  const repo = ref.repository;

  return {
    reference: ref,

    resolve(resolveOptions: ResolveOptions = {}): Promise<ResolvedImage> {
      return resolveRegistryImage(client, ref, resolveOptions);
    },

    openBlob(descriptor: Descriptor, options?: OpenBlobOptions): Promise<Readable> {
      return client.getBlob(repo, descriptor, options);
    },

    // Connections belong to the shared client (closeRegistryClients); nothing else to free.
    async close(): Promise<void> {},
  };
}

export async function openRegistryDestination(ref: RegistryReference, options: RegistryOptions): Promise<ImageDestination> {
  const client = registryClientFor(ref.registry, options);
  const repo = ref.repository;
  const preferences: DestinationPreferences = { manifestFormat: 'keep', layerCompression: 'gzip' };

  return {
    reference: ref,
    preferences,

    async hasBlob(descriptor: Descriptor, mountFrom?: ImageReference): Promise<boolean> {
      if ((await client.hasBlob(repo, descriptor.digest)) !== undefined) return true;
      if (mountFrom?.transport === 'registry' && endpointFor(mountFrom.registry, options).host === client.host && mountFrom.repository !== repo) {
        return client.mountBlob(repo, descriptor.digest, mountFrom.repository);
      }
      return false;
    },

    async putBlob(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
      const stored = await client.uploadBlob(repo, open, {
        ...(blob.digest !== undefined && { digest: blob.digest }),
        ...(blob.size !== undefined && { size: blob.size }),
        // The registry verifies a known digest at the PUT; hashing here as well would double the work.
        ...(blob.digest !== undefined && { hashLocally: false }),
      });
      return { mediaType: blob.mediaType, digest: stored.digest, size: stored.size };
    },

    async putBlobWhileWritten(bytes: Readable, stored: Promise<{ digest: string; size: number }>, blob: { mediaType: string; chunkBytes?: number }): Promise<Descriptor> {
      const sent = await client.uploadBlobWhileWritten(repo, bytes, stored, blob.chunkBytes);
      return { mediaType: blob.mediaType, digest: sent.digest, size: sent.size };
    },

    async putManifest(manifestBytes: Buffer, mediaType: string): Promise<string> {
      if (ref.digest && !ref.tag && sha256Digest(manifestBytes) !== ref.digest) {
        throw new BuildfleetError('integrity', `${formatReference(ref)}: the manifest to push has digest ${sha256Digest(manifestBytes)}, not the one the reference names`);
      }
      const target = ref.tag ?? ref.digest ?? 'latest';
      return client.putManifest(repo, target, manifestBytes, mediaType || MediaType.ociManifest);
    },

    // The manifest PUT is the last step and is what makes the image visible: nothing to commit.
    async commit(): Promise<void> {},

    // Blobs already uploaded stay in the registry unreferenced; its garbage collector removes
    // them. No manifest was written unless putManifest succeeded, so no tag names a partial image.
    async abort(): Promise<void> {},
  };
}
