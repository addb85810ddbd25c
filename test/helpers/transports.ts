import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { MediaType } from '../../imagebuilder/oci/media-types.js';
import { sha256Digest } from '../../imagebuilder/oci/digest.js';
import type { ArchiveReference, ImageReference } from '../../imagebuilder/oci/reference.js';
import type { Descriptor } from '../../imagebuilder/oci/schemas.js';
import type { ImageDestination, ImageSource, ResolvedImage } from '../../imagebuilder/transports/types.js';

/** Helpers for the transport tests: references, a bare copy, hand-made manifests. */

export const archiveRef = (path: string, name?: string, tag?: string): ArchiveReference => ({
  transport: 'docker-archive',
  path,
  ...(name !== undefined && { name }),
  ...(tag !== undefined && { tag }),
});

/**
 * Copies one image with nothing but the transport calls, without the copy engine: the config and
 * the layers in order, then the manifest as it is, then commit; `dst` is aborted on failure.
 */
export async function copyBlobsAndManifest(src: ImageSource, dst: ImageDestination): Promise<void> {
  try {
    const image = await src.resolve();
    const { config, layers } = image.manifest;
    await dst.putBlob(() => src.openBlob(config), { mediaType: config.mediaType, digest: config.digest, size: config.size });
    for (const layer of layers) {
      await dst.putBlob(() => src.openBlob(layer), { mediaType: layer.mediaType, digest: layer.digest, size: layer.size });
    }
    await dst.putManifest(image.manifestBytes, image.manifestMediaType);
    await dst.commit();
  } catch (err) {
    await dst.abort();
    throw err;
  }
}

type ManifestBytes = { digest: string; size: number };

/** The bytes of an OCI image index over two image manifests: linux/amd64 and linux/arm64/v8. */
export function amd64Arm64Index(amd64: ManifestBytes, arm64: ManifestBytes): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: amd64.digest, size: amd64.size, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: MediaType.ociManifest, digest: arm64.digest, size: arm64.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ],
    }),
  );
}

/** One layer of a memorySource: what it claims to be (uncompressed) and how its bytes come. */
export type MemoryLayer = {
  digest: string;
  size: number;
  open(): Promise<Readable>;
};

/**
 * A Docker schema2 image held in memory, for copy tests: uncompressed layers (digest = diff_id)
 * opened by their own `open`, so a test decides what each blob does (fail, stall, trickle).
 * openBlob does not verify: the destinations check what lands.
 */
export function memorySource(layers: MemoryLayer[], reference: ImageReference = archiveRef('/memory/source.tar')): ImageSource {
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }));
  const config: Descriptor = { mediaType: MediaType.dockerConfig, digest: sha256Digest(configBytes), size: configBytes.length };
  const manifest = { schemaVersion: 2 as const, mediaType: MediaType.dockerManifest, config, layers: layers.map((l) => ({ mediaType: MediaType.dockerLayer, digest: l.digest, size: l.size })) };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const image: ResolvedImage = {
    manifest,
    manifestBytes,
    manifestDigest: sha256Digest(manifestBytes),
    manifestMediaType: MediaType.dockerManifest,
    config: JSON.parse(configBytes.toString()) as ResolvedImage['config'],
    configBytes,
  };
  return {
    reference,
    resolve: async () => image,
    openBlob: async (descriptor) => {
      if (descriptor.digest === config.digest) return Readable.from([configBytes]);
      const layer = layers.find((l) => l.digest === descriptor.digest);
      if (!layer) throw new Error(`memorySource: no blob ${descriptor.digest}`);
      return layer.open();
    },
    close: async () => {},
  };
}

/** A memorySource layer of `content`. */
export function bufferLayer(content: Buffer): MemoryLayer {
  return { digest: sha256Digest(content), size: content.length, open: async () => Readable.from([content]) };
}

/** A memorySource layer whose open() fails, after `delayMs`. */
export function failingLayer(error: Error, delayMs = 0): MemoryLayer {
  const content = Buffer.from(`failing layer: ${error.message}`);
  return {
    digest: sha256Digest(content),
    size: content.length,
    open: async () => {
      if (delayMs > 0) await sleep(delayMs);
      throw error;
    },
  };
}

/**
 * A big memorySource layer that comes slowly: open() answers after `openDelayMs`, then `chunks`
 * chunks of `chunkSize` bytes, one every `chunkDelayMs`. Counts what it served and which streams
 * are still open, so a test can tell whether a copy was stopped or ran to the end.
 */
export function slowLayer(options: { chunks: number; chunkSize: number; chunkDelayMs: number; openDelayMs?: number }): MemoryLayer & {
  opens: number;
  bytesServed: number;
  openStreams: number;
  /** Resolves once no open() is pending and every stream it gave is closed. */
  quiet(timeoutMs?: number): Promise<void>;
} {
  const chunk = (i: number) => Buffer.alloc(options.chunkSize, i & 0xff);
  const hash = createHash('sha256');
  for (let i = 0; i < options.chunks; i++) hash.update(chunk(i));
  let pendingOpens = 0;
  const layer = {
    digest: `sha256:${hash.digest('hex')}`,
    size: options.chunks * options.chunkSize,
    opens: 0,
    bytesServed: 0,
    openStreams: 0,
    async open(): Promise<Readable> {
      layer.opens++;
      pendingOpens++;
      try {
        if (options.openDelayMs) await sleep(options.openDelayMs);
      } finally {
        pendingOpens--;
      }
      let next = 0;
      let timer: NodeJS.Timeout | undefined;
      const stream = new Readable({
        read() {
          if (timer) return;
          timer = setTimeout(() => {
            timer = undefined;
            if (next === options.chunks) {
              stream.push(null);
              return;
            }
            const bytes = chunk(next++);
            layer.bytesServed += bytes.length;
            stream.push(bytes);
          }, options.chunkDelayMs);
        },
        destroy(err, callback) {
          if (timer) clearTimeout(timer);
          callback(err);
        },
      });
      layer.openStreams++;
      stream.once('close', () => layer.openStreams--);
      return stream;
    },
    async quiet(timeoutMs = 20_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (pendingOpens > 0 || layer.openStreams > 0) {
        if (Date.now() > deadline) throw new Error(`slowLayer: still busy after ${timeoutMs} ms (${pendingOpens} opening, ${layer.openStreams} streams open)`);
        await sleep(10);
      }
    },
  };
  return layer;
}
