import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { BuildfleetError } from '../errors.js';
import { layerCompression, layerMediaType, manifestMediaType, type Compression } from '../oci/media-types.js';
import { formatReference } from '../oci/reference.js';
import type { Descriptor, ImageConfig, Platform } from '../oci/schemas.js';
import type { ImageDestination, ImageSource } from '../transports/types.js';
import { makeScratchDir, removeTemp } from '../transports/temp-files.js';
import { resolveImage } from '../transports/resolve.js';
import { ensureBlob } from '../transports/blobs.js';
import { buildManifest, manifestFormatFor } from '../mutate/manifest.js';
import { configBlob, replaceLayers, withCreated, withLabels } from '../mutate/config.js';
import { imageTime } from '../mutate/time.js';
import { defaultGzipEngine, type GzipEngine } from '../compress/parallel-gzip.js';
import { mergeLayers } from './merge.js';
import { planSquash, type SquashPlan } from './plan.js';
import { indexLayers, writeOutputs, type IndexedLayer, type OutputLayer } from './passes.js';

export const SOURCE_LABEL = 'io.buildfleet.squash.source';

export type SquashOptions = {
  /** Output layers (K): 1 is the classic squash; more are size-balanced with disjoint paths. */
  layers?: number;
  /** 1-based: squash layers N..top onto the unchanged layers below N (1 = everything). */
  fromLayer?: number;
  compression?: Compression;
  level?: number;
  sourceDateEpoch?: number;
  platform?: Platform;
  tmpDir?: string;
  onProgress?: (event: SquashProgress) => void;
};

export type SquashProgress =
  | { phase: 'index'; layersDone: number; layers: number }
  | { phase: 'write'; bytes: number; totalBytes: number }
  | { phase: 'push'; blobsDone: number; blobs: number };

export type SquashReport = {
  source: string;
  destination: string;
  manifestDigest: string;
  layers: { before: number; after: number };
  bytes: { compressedBefore: number; compressedAfter: number; uncompressedBefore: number; uncompressedAfter: number };
  files: number;
  entriesBefore: number;
  shadowedBytes: number;
  outputLayers: Array<{ digest: string; diffId: string; size: number; uncompressedSize: number }>;
  /** How the outputs were compressed; the blob bytes (not the diff_ids) depend on the gzip engine. */
  compression: { format: Compression; level?: number; engine?: GzipEngine };
  phasesMs: { resolve: number; index: number; merge: number; write: number; push: number; total: number };
};

/**
 * Squashes an image into one or K layers: exact OCI layer semantics (./merge.ts), bounded memory
 * (two streaming passes, ./passes.ts), compression on all cores, then blobs, config and manifest
 * to the destination, manifest last. On failure the destination is aborted and temp files go.
 */
export async function squashImage(source: ImageSource, destination: ImageDestination, options: SquashOptions = {}): Promise<SquashReport> {
  const progress = options.onProgress ?? (() => {});
  const started = performance.now();
  const lap = (() => {
    let last = started;
    return () => {
      const now = performance.now();
      const ms = Math.round(now - last);
      last = now;
      return ms;
    };
  })();
  const work = await makeScratchDir(options.tmpDir ?? tmpdir(), 'squash');
  const liveUploads: Array<Promise<Descriptor> | undefined> = [];
  try {
    const image = await resolveImage(source, options.platform);
    const { layers } = image.manifest;
    const diffIds = image.config.rootfs.diff_ids;
    if (layers.length !== diffIds.length) {
      throw new BuildfleetError('format', `${formatReference(source.reference)}: manifest has ${layers.length} layers but the config lists ${diffIds.length} diff_ids`);
    }
    const resolveMs = lap();

    const fromLayer = (options.fromLayer ?? 1) - 1;
    if (fromLayer < 0 || fromLayer >= Math.max(1, layers.length)) {
      throw new BuildfleetError('usage', `--from-layer ${options.fromLayer} is outside the image's layers 1..${layers.length}`);
    }

    let indexed = 0;
    let index: IndexedLayer[] | undefined = await indexLayers(source, layers, diffIds, {
      spoolDir: work,
      spoolFrom: fromLayer,
      onLayer: () => progress({ phase: 'index', layersDone: ++indexed, layers: layers.length }),
    });
    const uncompressedBefore = index.reduce((sum, layer) => sum + layer.uncompressedBytes, 0);
    const spools = index.map((layer) => layer.spool);
    const spans = index.map((layer) => layer.spans);
    const indexMs = lap();

    // Pass 1's stream buffers and garbage go before the merge and plan add their peak to the index's.
    await collectGarbageNow();
    const { plan, shadowedBytes, inputEntries } = planFromIndex(index, { layers: options.layers ?? 1, fromLayer });
    // From here on only the plan is needed: let the index (and the merged tree, gone with planFromIndex's frame) be collected.
    index = undefined;
    await collectGarbageNow();
    const mergeMs = lap();

    const compression = options.compression ?? 'gzip';
    const format = manifestFormatFor(destination.preferences.manifestFormat, image.manifestMediaType);
    const totalBytes = plan.outputBytes.reduce((a, b) => a + b, 0);
    let written = 0;
    // Where the destination can take a blob before its digest is known (a registry: the digest
    // is needed only at the PUT), each output streams there while it is compressed.
    const putWhileWritten = destination.putBlobWhileWritten?.bind(destination);
    const live = (k: number, bytes: Readable, stored: Promise<{ digest: string; size: number }>) => {
      const upload = putWhileWritten!(bytes, stored, { mediaType: layerMediaType(format, compression), chunkBytes: liveChunkBytes(plan.directories.length) });
      // Settled before the blob is needed; a failed one is sent again from its file.
      upload.catch(() => {});
      liveUploads[k] = upload;
    };
    const outputs = await withRoomToGrow(() => writeOutputs(source, layers, diffIds, plan, {
      compression,
      tmpDir: work,
      spools,
      spans,
      ...(options.level !== undefined && { level: options.level }),
      ...(options.sourceDateEpoch !== undefined && { sourceDateEpoch: options.sourceDateEpoch }),
      ...(putWhileWritten && { live }),
      onBytes: (bytes) => progress({ phase: 'write', bytes: (written += bytes), totalBytes }),
    }));
    const writeMs = lap();

    const kept = layers.slice(0, fromLayer);
    const config = squashedConfig(image.config, outputs, layers.length, image.manifestDigest, { ...options, keptLayers: fromLayer });
    const { bytes: configBytes, descriptor: configDescriptor } = configBlob(config, format);
    const layerDescriptors: Descriptor[] = [];
    let pushed = 0;
    const blobs = kept.length + outputs.length + 1;
    // Kept layers go over unchanged (and are mounted or skipped where the destination has them).
    for (const layer of kept) {
      const descriptor: Descriptor = { mediaType: layerMediaType(format, layerCompression(layer.mediaType)), digest: layer.digest, size: layer.size };
      await ensureBlob(destination, descriptor, () => source.openBlob(layer, { verify: false }), source.reference);
      layerDescriptors.push(descriptor);
      progress({ phase: 'push', blobsDone: ++pushed, blobs });
    }
    for (const [k, output] of outputs.entries()) {
      const descriptor: Descriptor = { mediaType: layerMediaType(format, compression), digest: output.digest, size: output.size };
      const sent = await liveUploads[k]?.then(
        (stored) => stored.digest === output.digest && stored.size === output.size,
        () => false,
      );
      if (!sent) await ensureBlob(destination, descriptor, async () => createReadStream(output.path));
      layerDescriptors.push(descriptor);
      progress({ phase: 'push', blobsDone: ++pushed, blobs });
    }
    await ensureBlob(destination, configDescriptor, async () => Readable.from([configBytes]));
    progress({ phase: 'push', blobsDone: ++pushed, blobs });
    const manifestDigest = await destination.putManifest(buildManifest(format, configDescriptor, layerDescriptors), manifestMediaType(format));
    await destination.commit();
    const pushMs = lap();

    return {
      source: formatReference(source.reference),
      destination: formatReference(destination.reference),
      manifestDigest,
      layers: { before: layers.length, after: kept.length + outputs.length },
      bytes: {
        compressedBefore: layers.reduce((sum, layer) => sum + layer.size, 0),
        compressedAfter: outputs.reduce((sum, output) => sum + output.size, 0),
        uncompressedBefore,
        uncompressedAfter: outputs.reduce((sum, output) => sum + output.uncompressedSize, 0),
      },
      files: plan.files,
      entriesBefore: inputEntries,
      shadowedBytes,
      outputLayers: outputs.map(({ digest, diffId, size, uncompressedSize }) => ({ digest, diffId, size, uncompressedSize })),
      compression: { format: compression, ...(options.level !== undefined && { level: options.level }), ...(compression === 'gzip' && { engine: defaultGzipEngine() }) },
      phasesMs: { resolve: resolveMs, index: indexMs, merge: mergeMs, write: writeMs, push: pushMs, total: Math.round(performance.now() - started) },
    };
  } catch (err) {
    // A failed output rejects its upload's digest, so none of them commits; wait for them to be
    // done (sessions cancelled) before the destination is aborted.
    await Promise.allSettled(liveUploads);
    await destination.abort().catch(() => {});
    throw err;
  } finally {
    await removeTemp(work);
  }
}

/**
 * The K outputs upload at once, each holding up to two request bodies (one sent, one gathered):
 * at the registry client's 16 MiB a chunk that was 32 MiB per output, 128 MiB at K=4, the part
 * of the peak that grew with K. The chunks share one budget instead (so K=1 keeps its 16 MiB
 * chunks and the fewest flushes on the registry), down to 1 MiB each.
 */
const LIVE_UPLOAD_BUDGET = 16 << 20;
const MIN_LIVE_CHUNK = 1 << 20;

export function liveChunkBytes(outputs: number): number {
  return Math.max(MIN_LIVE_CHUNK, Math.floor(LIVE_UPLOAD_BUDGET / Math.max(1, outputs)));
}

/**
 * The index and the merged tree (a few hundred bytes per entry, so hundreds of MB for a big
 * image) are garbage once the plan exists; V8 would free them only at its next full collection,
 * well into the write phase, whose buffers would then stack on top of them. A full collection
 * there keeps the peak at the larger of the two phases, not their sum. One before the merge
 * too: pass 1 leaves tens of MB of stream buffers and garbage that the merge and plan (the
 * peak of a squash with many files) would otherwise build on.
 */
const COLLECT_ABOVE_BYTES = 40 << 20;

async function collectGarbageNow(): Promise<void> {
  // Below this the peak is the write phase's buffers, not the heap: a collection would only cost time.
  if (getHeapStatistics().used_heap_size < COLLECT_ABOVE_BYTES) return;
  let gc: () => void;
  try {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  } catch {
    return; // A runtime without it only peaks higher.
  }
  gc();
  // What the running job still reaches (the values its frames held) is free only once it has
  // ended: a second collection on the next turn of the loop frees it and gives its pages back.
  await new Promise((resolve) => setImmediate(resolve));
  gc();
}

/**
 * Pass 2 keeps a small heap (the plan is a few typed arrays) and pushes GBs of buffers through
 * it. From so small a heap V8's own growing factor leaves it little room, and it ran one full
 * collection after another, each marking on every core. Here the old generation may grow to a
 * few times what is live before the next one: far fewer collections and less CPU for the whole
 * squash, and the peak RSS is unchanged (the buffers live outside the heap; figures in
 * ./README.md). The flag is read at every limit computation;
 * 0 (its default) gives V8 its own factor back.
 */
const PASS2_HEAP_GROWING_PERCENT = 300;

async function withRoomToGrow<T>(task: () => Promise<T>): Promise<T> {
  const own = process.execArgv.some((arg) => arg.startsWith('--heap-growing-percent'));
  const set = (percent: number) => {
    if (!own) setFlagsFromString(`--heap-growing-percent=${percent}`);
  };
  set(PASS2_HEAP_GROWING_PERCENT);
  try {
    return await task();
  } finally {
    set(0);
  }
}

/** Merge and plan in their own frame, so the merged tree is garbage as soon as the plan exists. */
function planFromIndex(index: IndexedLayer[], options: { layers: number; fromLayer: number }): { plan: SquashPlan; shadowedBytes: number; inputEntries: number } {
  const entries = index.map((layer) => layer.entries);
  const merged = mergeLayers(entries);
  const lower = options.fromLayer > 0 ? mergeLayers(entries.slice(0, options.fromLayer)) : undefined;
  const plan = planSquash(merged, index.length, { layers: options.layers, fromLayer: options.fromLayer, ...(lower && { lower }) });
  return { plan, shadowedBytes: merged.shadowedBytes, inputEntries: merged.inputEntries };
}

/**
 * The squashed image's config: runtime config kept, diff_ids replaced, every old history entry
 * kept but marked empty, then one entry per output layer; a label names the source manifest.
 * Its `created` time is the source's (or SOURCE_DATE_EPOCH), so the same input gives the same bytes.
 */
export function squashedConfig(
  original: ImageConfig,
  outputs: Array<Pick<OutputLayer, 'diffId'>>,
  inputLayers: number,
  sourceDigest: string,
  options: Pick<SquashOptions, 'sourceDateEpoch'> & { keptLayers?: number },
): ImageConfig {
  const created = options.sourceDateEpoch !== undefined ? imageTime(options.sourceDateEpoch) : original.created;
  const kept = options.keptLayers ?? 0;
  const added = outputs.map((output, k) => ({
    diffId: output.diffId,
    history: {
      ...(created && { created }),
      created_by: `buildfleet image squash: layers ${kept + 1}-${inputLayers} into ${outputs.length}${outputs.length > 1 ? ` (part ${k + 1})` : ''}`,
      comment: `squashed from ${sourceDigest}`,
    },
  }));
  return replaceLayers(withLabels(withCreated(original, created), { [SOURCE_LABEL]: sourceDigest }), kept, added);
}
