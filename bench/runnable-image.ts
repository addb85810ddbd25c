import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { DigestStream } from '../imagebuilder/oci/digest.js';
import { busyboxRootfs } from '../daemons/base-image.js';
import { configMediaType, layerMediaType, manifestMediaType } from '../imagebuilder/oci/media-types.js';
import type { Descriptor } from '../imagebuilder/oci/schemas.js';
import { buildManifest } from '../imagebuilder/mutate/manifest.js';
import { compressor } from '../imagebuilder/compress/codecs.js';
import { pipeOn } from '../imagebuilder/compress/streams.js';
import type { ImageDestination } from '../imagebuilder/transports/types.js';
import { seededBytes, syntheticConfig } from './image-generator.js';

export type RunnableImageOptions = {
  /** Data layers on top of the busybox base; each holds one file of layerBytes under /data. */
  dataLayers?: number;
  layerBytes?: number;
  seed?: string;
};

/**
 * A build image that runs (busybox base, so `sh -c` works) with as much extra data as asked,
 * written straight into a destination: what node-pool tests pre-pull and run jobs in.
 */
export async function writeRunnableImage(destination: ImageDestination, options: RunnableImageOptions = {}): Promise<{ manifestDigest: string; layers: Descriptor[] }> {
  const seed = options.seed ?? 'runnable';
  const diffIds: string[] = [];
  const layers: Descriptor[] = [];
  const put = async (makeTar: () => Promise<Readable>) => {
    let diffId = '';
    const descriptor = await destination.putBlob(async () => {
      const diff = new DigestStream();
      diff.once('end', () => (diffId = diff.digest));
      return pipeOn(pipeOn(await makeTar(), diff), compressor('gzip', 1));
    }, { mediaType: layerMediaType('docker', 'gzip') });
    layers.push(descriptor);
    diffIds.push(diffId);
  };
  await put(async () => (await busyboxRootfs()) as unknown as Readable);
  for (let i = 0; i < (options.dataLayers ?? 0); i++) {
    await put(async () => {
      const pack = tar.pack();
      const size = options.layerBytes ?? 1024 * 1024;
      pack.entry({ name: 'data', type: 'directory', mode: 0o755, mtime: new Date(0) });
      pack.entry({ name: `data/blob${i}.bin`, mode: 0o644, mtime: new Date(0), size }, seededBytes(`${seed}/${i}`, size));
      pack.finalize();
      return pack as unknown as Readable;
    });
  }
  const config = syntheticConfig(diffIds, (i) => (i === 0 ? 'busybox base' : `data layer ${i}`));
  const configDescriptor = await destination.putBlob(async () => Readable.from([config]), { mediaType: configMediaType('docker') });
  const manifestDigest = await destination.putManifest(buildManifest('docker', configDescriptor, layers), manifestMediaType('docker'));
  await destination.commit();
  return { manifestDigest, layers };
}
