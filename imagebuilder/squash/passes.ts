import { join } from 'node:path';
import type { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { availableParallelism } from 'node:os';
import { finished } from 'node:stream/promises';
import { DigestStream, VerifyingStream } from '../oci/digest.js';
import { layerCompression, type Compression } from '../oci/media-types.js';
import type { Descriptor } from '../oci/schemas.js';
import type { ImageSource } from '../transports/types.js';
import { ByteCounter, compressor, decompressor, pipeOn } from '../copy/codecs.js';
import { parallelGzip } from '../compress/parallel-gzip.js';
import { writeFileAtomically } from '../transports/files.js';
import type { IndexedEntry } from './merge.js';
import { headerOf, type SquashPlan } from './plan.js';
import { readTar } from '../tar/reader.js';
import { TarWriter } from '../tar/writer.js';
import type { TarHeader, TarTime } from '../tar/entry.js';

/**
 * The two I/O passes of a squash. Pass 1 reads every layer's headers (contents are skipped),
 * in parallel; pass 2 streams the layers again in order and writes each surviving entry, with
 * its bytes, into its output layer as it goes by, so memory stays bounded whatever the size.
 */

/**
 * A layer's uncompressed tar, verified twice: the blob against its digest (by the source), the
 * tar against its diff_id (here; the stream fails at its end instead of ending on a mismatch).
 */
async function openLayerTar(source: ImageSource, layer: Descriptor, diffId: string, what: string, verifyBlob = true): Promise<VerifyingStream> {
  const blob = await source.openBlob(layer, { verify: verifyBlob });
  const tar = pipeOn(blob, decompressor(layerCompression(layer.mediaType)));
  return pipeOn(tar, new VerifyingStream(diffId, undefined, `${what}: uncompressed tar`));
}

/** Layers may carry padding after the end-of-archive blocks: read it, so the diff_id check runs. */
async function drainRest(tar: Readable): Promise<void> {
  tar.resume();
  await finished(tar);
}

export type IndexedLayer = { entries: IndexedEntry[]; uncompressedBytes: number };

export async function indexLayers(
  source: ImageSource,
  layers: Descriptor[],
  diffIds: string[],
  onLayer: (index: number) => void = () => {},
): Promise<IndexedLayer[]> {
  const limit = pLimit(Math.max(1, availableParallelism()));
  return Promise.all(
    layers.map((layer, index) =>
      limit(async () => {
        const what = `layer ${index + 1} (${layer.digest.slice(0, 19)})`;
        const tar = await openLayerTar(source, layer, diffIds[index] ?? '', what);
        const entries: IndexedEntry[] = [];
        let ordinal = 0;
        for await (const entry of readTar(tar, { what })) {
          entries.push({ layer: index, ordinal: ordinal++, header: entry.header });
          entry.body.resume();
        }
        await drainRest(tar);
        onLayer(index);
        return { entries, uncompressedBytes: tar.bytesSeen };
      }),
    ),
  );
}

export type OutputLayer = { path: string; digest: string; size: number; diffId: string; uncompressedSize: number };

export type WriteOptions = {
  compression: Compression;
  level?: number;
  /** Clamp every mtime to this (SOURCE_DATE_EPOCH) for reproducible layers. */
  sourceDateEpoch?: number;
  tmpDir: string;
  onBytes?: (bytes: number) => void;
};

function clampTime(time: TarTime, epoch: number | undefined): TarTime {
  return epoch !== undefined && time.sec >= epoch ? { sec: epoch, nsec: 0 } : time;
}

/** Output headers carry mtime only: atime and ctime change on every read and would break determinism. */
function outputHeader(header: TarHeader, epoch: number | undefined): TarHeader {
  const { atime: _atime, ctime: _ctime, ...rest } = header;
  return { ...rest, mtime: clampTime(header.mtime, epoch) };
}

function outputCompressor(compression: Compression, level: number | undefined) {
  return compression === 'gzip' ? parallelGzip(level !== undefined ? { level } : {}) : compressor(compression, level);
}

/**
 * Pass 2: writes the plan's outputs to compressed files in tmpDir (so an upload can be retried
 * and its digest is known before it starts), computing diff_id and blob digest in the same pass.
 */
export async function writeOutputs(source: ImageSource, layers: Descriptor[], diffIds: string[], plan: SquashPlan, options: WriteOptions): Promise<OutputLayer[]> {
  const writers = plan.directories.map(() => new TarWriter());
  const diffs = writers.map(() => new DigestStream());
  const files = writers.map((writer, k) => {
    const uncompressed = pipeOn(writer.stream, diffs[k]!);
    const compressed = pipeOn(uncompressed, outputCompressor(options.compression, options.level));
    return writeFileAtomically(compressed, join(options.tmpDir, `layer-${k}.blob`));
  });
  // A failed output must stop the input pass and every other output (each removes its temp file).
  let failed: unknown;
  for (const file of files) {
    file.catch((err: Error) => {
      if (failed) return;
      failed = err;
      for (const writer of writers) writer.stream.destroy(err);
    });
  }
  const settled = Promise.allSettled(files);
  try {
    for (const [k, directories] of plan.directories.entries()) {
      for (const header of directories) await writers[k]!.add(outputHeader(header, options.sourceDateEpoch));
      for (const whiteout of plan.whiteouts[k] ?? []) await writers[k]!.add(whiteout);
    }
    for (const [index, layer] of layers.entries()) {
      if (index < plan.fromLayer) continue; // kept as it is
      const actions = plan.actions[index]!;
      const what = `layer ${index + 1} (${layer.digest.slice(0, 19)})`;
      // Pass 1 verified the blob; the diff_id check alone proves the content is the same again.
      const tar = await openLayerTar(source, layer, diffIds[index] ?? '', what, false);
      let ordinal = 0;
      for await (const entry of readTar(tar, { what })) {
        if (failed) throw failed;
        const list = actions.get(ordinal++);
        if (!list) {
          entry.body.resume();
          continue;
        }
        const [first, ...links] = list;
        // Count through a transform: a 'data' listener would start the body flowing before the writer reads it.
        const isFile = first!.source.type === 'file';
        const body = !isFile ? undefined : options.onBytes ? pipeOn(entry.body, new ByteCounter(options.onBytes)) : entry.body;
        if (!body) entry.body.resume();
        await writers[first!.output]!.add(outputHeader(headerOf(first!), options.sourceDateEpoch), body);
        for (const link of links) await writers[link.output]!.add(outputHeader(headerOf(link), options.sourceDateEpoch));
      }
      await drainRest(tar);
    }
    for (const writer of writers) await writer.finish();
  } catch (err) {
    for (const writer of writers) writer.stream.destroy(err as Error);
    await settled;
    throw failed ?? err;
  }
  await settled;
  if (failed) throw failed;
  const stored = await Promise.all(files);
  return stored.map((file, k) => ({ path: join(options.tmpDir, `layer-${k}.blob`), digest: file.digest, size: file.size, diffId: diffs[k]!.digest, uncompressedSize: diffs[k]!.size }));
}
