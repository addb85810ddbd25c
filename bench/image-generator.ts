import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import pLimit from 'p-limit';
import { DigestStream } from '../imagebuilder/oci/digest.js';
import { configMediaType, layerMediaType, manifestMediaType, type ManifestFormat } from '../imagebuilder/oci/media-types.js';
import { hostPlatform } from '../imagebuilder/oci/platform.js';
import type { Descriptor } from '../imagebuilder/oci/schemas.js';
import { buildManifest } from '../imagebuilder/mutate/manifest.js';
import { compressor } from '../imagebuilder/compress/codecs.js';
import { pipeOn } from '../imagebuilder/compress/streams.js';
import type { ImageDestination } from '../imagebuilder/transports/types.js';

export type GeneratorOptions = {
  layers: number;
  totalBytes: number;
  /** Files per layer; sizes follow a mix of many small files and a few large ones. */
  filesPerLayer?: number;
  seed?: number;
  format?: ManifestFormat;
  /** gzip level; 1 keeps generation fast, the content is mostly incompressible anyway. */
  compressionLevel?: number;
  concurrency?: number;
};

export type GeneratedImage = { manifestDigest: string; layers: Descriptor[]; uncompressedBytes: number; files: number };

/** Deterministic bytes: AES-128-CTR keystream from the seed, fast and the same on every run. */
export function seededBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return cipher.update(Buffer.alloc(size));
}

/** Sizes of one layer's files: 90% small (1-32 KB), the rest share what is left. */
export function fileSizes(layerBytes: number, files: number, seed: number): number[] {
  let state = seed >>> 0 || 1;
  const next = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const small = Math.floor(files * 0.9);
  const sizes = Array.from({ length: small }, () => 1024 + Math.floor(next() * 31 * 1024));
  const used = sizes.reduce((a, b) => a + b, 0);
  const large = files - small;
  const remaining = Math.max(0, layerBytes - used);
  for (let i = 0; i < large; i++) sizes.push(Math.floor(remaining / large));
  return sizes;
}

/**
 * Writes a synthetic multi-layer image straight into any destination, no daemon or network
 * needed. Each layer is a tar of files under its own directory, gzip-compressed on the way.
 */
export async function generateImage(destination: ImageDestination, options: GeneratorOptions): Promise<GeneratedImage> {
  const wanted = destination.preferences;
  const format = wanted.manifestFormat === 'keep' ? (options.format ?? 'docker') : wanted.manifestFormat;
  // An archive stores plain tars; everything else gets gzip.
  const compression = wanted.layerCompression === 'none' ? 'none' : 'gzip';
  const filesPerLayer = options.filesPerLayer ?? 200;
  const layerBytes = Math.floor(options.totalBytes / options.layers);
  const seed = options.seed ?? 1;
  const limit = pLimit(options.concurrency ?? 2);
  const diffIds: string[] = new Array(options.layers);

  const layers = await Promise.all(
    Array.from({ length: options.layers }, (_, index) =>
      limit(async () => {
        const open = async () => {
          const pack = tar.pack();
          const diff = new DigestStream();
          const sizes = fileSizes(layerBytes, filesPerLayer, seed * 1000 + index);
          void (async () => {
            pack.entry({ name: `layer${index}`, type: 'directory', mode: 0o755, mtime: new Date(0) });
            for (const [file, size] of sizes.entries()) {
              const body = seededBytes(`${seed}/${index}/${file}`, size);
              await new Promise<void>((resolve, reject) =>
                pack.entry({ name: `layer${index}/f${file}.bin`, mode: 0o644, mtime: new Date(0), size }, body, (err) => (err ? reject(err) : resolve())),
              );
            }
            pack.finalize();
          })().catch((err) => pack.destroy(err));
          const tarStream = pipeOn(pack as unknown as Readable, diff);
          diff.once('end', () => (diffIds[index] = diff.digest));
          return pipeOn(tarStream, compressor(compression, options.compressionLevel ?? 1));
        };
        return destination.putBlob(open, { mediaType: layerMediaType(format, compression) });
      }),
    ),
  );

  const config = syntheticConfig(diffIds, (i) => `buildfleet generate layer ${i}`);
  const configDescriptor = await destination.putBlob(async () => Readable.from([config]), { mediaType: configMediaType(format) });
  const manifest = buildManifest(format, configDescriptor, layers);
  const manifestDigest = await destination.putManifest(manifest, manifestMediaType(format));
  await destination.commit();
  return { manifestDigest, layers, uncompressedBytes: layerBytes * options.layers, files: filesPerLayer * options.layers };
}

/** The config of a generated image: this machine's platform, a shell as its command, one history entry per layer. */
export function syntheticConfig(diffIds: string[], createdBy: (layer: number) => string): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: hostPlatform().architecture,
      os: 'linux',
      config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created: '1970-01-01T00:00:00Z', created_by: createdBy(i) })),
    }),
  );
}
