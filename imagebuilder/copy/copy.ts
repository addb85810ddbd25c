import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import {
  configMediaType,
  formatOfManifestMediaType,
  layerCompression,
  layerMediaType,
  manifestMediaType,
  type Compression,
  type ManifestFormat,
} from '../oci/media-types.js';
import type { Descriptor, Platform } from '../oci/schemas.js';
import { formatReference } from '../oci/reference.js';
import { BuildfleetError } from '../errors.js';
import type { DestinationPreferences, ImageDestination, ImageSource, ProgressListener, ResolvedImage } from '../transports/types.js';
import { resolveImage } from '../transports/resolve.js';
import { ensureBlob } from '../transports/blobs.js';
import { recompress } from '../compress/codecs.js';
import { ByteCounter, pipeOn } from '../compress/streams.js';
import { buildManifest, manifestFormatFor } from '../mutate/manifest.js';

export type CopyOptions = {
  platform?: Platform;
  /** Blobs in flight at once. */
  concurrency?: number;
  /** Compression level when layers are (re)compressed on the way. */
  compressionLevel?: number;
  onProgress?: ProgressListener;
};

/** present: the destination had the blob (or mounted it from another repository); nothing uploaded. */
export type LayerAction = 'copied' | 'present' | 'converted';

export type CopyResult = {
  source: string;
  destination: string;
  manifestDigest: string;
  manifestMediaType: string;
  layers: Array<{ digest: string; size: number; mediaType: string; action: LayerAction; sourceDigest: string }>;
  /** Bytes read from the source for blobs that were not already at the destination. */
  bytesRead: number;
  durationMs: number;
};

/** What each layer becomes at the destination: pure, so it can be tested without I/O. */
export type LayerPlan = { source: Descriptor; diffId: string; from: Compression; to: Compression; mediaType: string };

export function planLayers(image: ResolvedImage, preferences: DestinationPreferences): { format: ManifestFormat; layers: LayerPlan[] } {
  const format = manifestFormatFor(preferences.manifestFormat, image.manifestMediaType);
  const layers = image.manifest.layers.map((source, i): LayerPlan => {
    const from = layerCompression(source.mediaType);
    const wanted = preferences.layerCompression;
    // 'gzip' asks that uncompressed layers be compressed; layers already compressed stay as they are.
    const to: Compression = wanted === 'keep' ? from : wanted === 'none' ? 'none' : from === 'none' ? wanted : from;
    return { source, diffId: image.config.rootfs.diff_ids[i] ?? '', from, to, mediaType: layerMediaType(format, to) };
  });
  return { format, layers };
}

/**
 * Copies one image from a source to a destination: blobs first (skipping or mounting what the
 * destination has, converting compression where it wants another), then the manifest, then
 * commit. On any failure the destination is aborted, so nothing points at missing blobs; blob
 * copies still running are stopped and waited for first, and queued ones never start.
 */
export async function copyImage(source: ImageSource, destination: ImageDestination, options: CopyOptions = {}): Promise<CopyResult> {
  const started = Date.now();
  const progress = options.onProgress ?? (() => {});
  try {
    const image = await resolveImage(source, options.platform);
    if (image.manifest.layers.length !== image.config.rootfs.diff_ids.length) {
      throw new BuildfleetError('format', `${formatReference(source.reference)}: manifest has ${image.manifest.layers.length} layers but the config lists ${image.config.rootfs.diff_ids.length} diff_ids`);
    }
    const plan = planLayers(image, destination.preferences);
    const limit = pLimit(options.concurrency ?? 4);
    const cancel = new BlobCancellation();
    let bytesRead = 0;

    const openCounted = async (descriptor: Descriptor, verify: boolean): Promise<Readable> => {
      cancel.check();
      const stream = await source.openBlob(descriptor, { verify });
      if (cancel.cancelled) {
        stream.destroy();
        cancel.check();
      }
      return pipeOn(stream, new ByteCounter((bytes) => {
        bytesRead += bytes;
        progress({ kind: 'blob-bytes', digest: descriptor.digest, bytes });
      }));
    };

    const copyLayer = async (layer: LayerPlan): Promise<CopyResult['layers'][number]> => {
      const { source: descriptor } = layer;
      progress({ kind: 'blob-start', digest: descriptor.digest, size: descriptor.size, what: 'layer' });
      const done = (stored: Descriptor, action: LayerAction) => {
        progress({ kind: 'blob-done', digest: descriptor.digest, skipped: action === 'present' });
        return { digest: stored.digest, size: stored.size, mediaType: layer.mediaType, action, sourceDigest: descriptor.digest };
      };
      if (layer.from === layer.to) {
        const target = { ...descriptor, mediaType: layer.mediaType };
        if (await destination.hasBlob(target, source.reference)) return done(target, 'present');
        cancel.check();
        // Unchanged bytes: the destination checks the digest where they land, once.
        const stored = await destination.putBlob(cancel.opener(() => openCounted(descriptor, false)), { mediaType: layer.mediaType, digest: descriptor.digest, size: descriptor.size });
        return done(stored, 'copied');
      }
      // Decompressing yields the diff_id, so the destination can check it and skip what it has.
      const expectedDigest = layer.to === 'none' ? layer.diffId : undefined;
      if (expectedDigest) {
        const target = { mediaType: layer.mediaType, digest: expectedDigest, size: 0 };
        if (await destination.hasBlob(target)) return done(target, 'present');
        cancel.check();
      }
      const stored = await destination.putBlob(
        // Converted bytes get a new digest, so the source's must be checked on the way.
        cancel.opener(async () => recompress(await openCounted(descriptor, true), layer.from, layer.to, options.compressionLevel)),
        { mediaType: layer.mediaType, ...(expectedDigest && { digest: expectedDigest }) },
      );
      return done(stored, 'converted');
    };

    const configDescriptor: Descriptor = { ...image.manifest.config, mediaType: configMediaType(plan.format) };
    const putConfig = async () => {
      progress({ kind: 'blob-start', digest: configDescriptor.digest, size: configDescriptor.size, what: 'config' });
      const present = await ensureBlob(destination, configDescriptor, cancel.opener(async () => Readable.from([image.configBytes])), source.reference);
      progress({ kind: 'blob-done', digest: configDescriptor.digest, skipped: present });
    };

    // Every blob copy that has started, until it settles: after a failure, abort() must wait for them.
    const running = new Set<Promise<unknown>>();
    let firstError: { error: unknown } | undefined;
    // On the first failure, right away (before the queue can start the next copy): start nothing
    // more (cleared copies never settle; nothing waits on them) and stop the copies in flight.
    const stopAll = (error: unknown) => {
      firstError ??= { error };
      limit.clearQueue();
      cancel.cancel();
    };
    const schedule = <T>(task: () => Promise<T>): Promise<T> =>
      limit(() => {
        cancel.check();
        const started = task();
        running.add(started);
        started.then(
          () => running.delete(started),
          (error: unknown) => {
            running.delete(started);
            stopAll(error);
          },
        );
        return started;
      });
    let layers: Array<CopyResult['layers'][number]>;
    try {
      [layers] = await Promise.all([Promise.all(plan.layers.map((layer) => schedule(() => copyLayer(layer)))), schedule(putConfig)]);
    } catch (err) {
      stopAll(err);
      // The stopped copies must be done before the destination is aborted, so none writes into
      // it afterwards (a late write could recreate a removed staging directory).
      await Promise.allSettled([...running]);
      throw firstError?.error ?? err;
    }

    const unchanged =
      plan.format === formatOfManifestMediaType(image.manifestMediaType) &&
      configDescriptor.mediaType === image.manifest.config.mediaType &&
      layers.every((layer, i) => layer.digest === image.manifest.layers[i]?.digest && layer.mediaType === image.manifest.layers[i]?.mediaType);
    const mediaType = unchanged ? image.manifestMediaType : manifestMediaType(plan.format);
    const manifestBytes = unchanged
      ? image.manifestBytes
      : buildManifest(plan.format, configDescriptor, layers.map((layer, i) => ({ ...image.manifest.layers[i], mediaType: layer.mediaType, digest: layer.digest, size: layer.size })), image.manifest);
    const manifestDigest = await destination.putManifest(manifestBytes, mediaType);
    progress({ kind: 'manifest', digest: manifestDigest });
    await destination.commit();
    return {
      source: formatReference(source.reference),
      destination: formatReference(destination.reference),
      manifestDigest,
      manifestMediaType: mediaType,
      layers,
      bytesRead,
      durationMs: Date.now() - started,
    };
  } catch (err) {
    await destination.abort().catch(() => {});
    throw err;
  }
}

/**
 * Stops the blob copies of one copyImage once one has failed: streams handed to the destination
 * are destroyed (which tears down everything feeding them: source sockets, files, zstd children),
 * and nothing more is opened.
 */
class BlobCancellation {
  private readonly live = new Set<Readable>();
  private readonly reason = Object.assign(new Error('copy cancelled: another blob failed'), { name: 'AbortError' });
  cancelled = false;

  check(): void {
    if (this.cancelled) throw this.reason;
  }

  cancel(): void {
    this.cancelled = true;
    for (const stream of this.live) {
      // The destination may not be listening yet; it still sees the error when it reads.
      stream.on('error', () => {});
      stream.destroy(this.reason);
    }
    this.live.clear();
  }

  /** `open` for a destination's putBlob: refused once cancelled, and its stream stopped on cancel. */
  opener(open: () => Promise<Readable>): () => Promise<Readable> {
    return async () => {
      this.check();
      const stream = await open();
      if (this.cancelled) {
        stream.destroy();
        this.check();
      }
      this.live.add(stream);
      stream.once('close', () => this.live.delete(stream));
      return stream;
    };
  }
}
