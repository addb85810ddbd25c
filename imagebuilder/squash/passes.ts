import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { availableParallelism } from 'node:os';
import { finished } from 'node:stream/promises';
import { DigestStream, VerifyingStream } from '../oci/digest.js';
import { layerCompression, type Compression } from '../oci/media-types.js';
import type { Descriptor } from '../oci/schemas.js';
import type { ImageSource } from '../transports/types.js';
import { compressor, decompressor } from '../compress/codecs.js';
import { ByteCounter, Coalesce, pipeOn } from '../compress/streams.js';
import { parallelGzip } from '../compress/parallel-gzip.js';
import { writeFileAtomically } from '../transports/files.js';
import type { IndexedEntry } from './merge.js';
import { SPECIAL, stepHeader, type EmitStep, type LayerWrites, type SquashPlan } from './plan.js';
import { readTar, type TarEntry } from '../tar/reader.js';
import { TarWriter } from '../tar/writer.js';
import { EntrySpans, SpoolReader, SpoolStream } from './spool.js';
import { LiveCopy } from './live.js';
import type { TarHeader, TarTime } from '../tar/entry.js';

/**
 * The two I/O passes of a squash. Pass 1 reads every layer's headers in parallel (contents
 * only flow to the spool); pass 2 streams the spooled tars again in order and writes each
 * surviving entry, with its bytes, into its output layer as it goes by, so memory stays
 * bounded whatever the size.
 */

/**
 * A layer's uncompressed tar, verified twice: the blob against its digest (by the source), the
 * tar against its diff_id (here; the stream fails at its end instead of ending on a mismatch).
 */
async function openLayerTar(source: ImageSource, layer: Descriptor, diffId: string, what: string, verifyBlob = true): Promise<VerifyingStream> {
  const blob = pipeOn(await source.openBlob(layer, { verify: verifyBlob }), new Coalesce(512 << 10));
  const tar = pipeOn(blob, decompressor(layerCompression(layer.mediaType)));
  return pipeOn(tar, new VerifyingStream(diffId, undefined, `${what}: uncompressed tar`));
}

/** Layers may carry padding after the end-of-archive blocks: read it, so the diff_id check runs. */
async function drainRest(tar: Readable): Promise<void> {
  tar.resume();
  await finished(tar);
}

/**
 * `spool`: the verified uncompressed tar, on disk, for pass 2 (only when pass 1 read it to its
 * end), and `spans`: where each of its entries lies.
 */
export type IndexedLayer = { entries: IndexedEntry[]; uncompressedBytes: number; spool?: string; spans?: EntrySpans };

export type IndexOptions = {
  /** Spool the layers from this index (0-based) on into `spoolDir`; the ones below need no pass 2. */
  spoolFrom?: number;
  spoolDir?: string;
  /** Layers read at once (default: one per core, plus one). */
  concurrency?: number;
  onLayer?: (index: number) => void;
};

/**
 * Pass 1. The first layer that fails stops the others: nothing queued starts, every open
 * stream is destroyed, and the call settles only once no layer is being read or spooled.
 */
export async function indexLayers(source: ImageSource, layers: Descriptor[], diffIds: string[], options: IndexOptions = {}): Promise<IndexedLayer[]> {
  // One more than cores: a layer waiting for its download leaves the others a core.
  const limit = pLimit(options.concurrency ?? availableParallelism());
  const stop = new AbortController();
  const compact = headerCompactor();
  const running = new Set<Promise<IndexedLayer>>();
  const tasks = layers.map((layer, index) =>
    limit(async () => {
      const spool = options.spoolDir !== undefined && index >= (options.spoolFrom ?? 0) ? join(options.spoolDir, `layer-${index}.tar`) : undefined;
      const task = indexLayer(source, layer, diffIds[index] ?? '', index, spool, stop.signal, compact);
      running.add(task);
      try {
        const indexed = await task;
        options.onLayer?.(index);
        return indexed;
      } catch (err) {
        // Here, not after Promise.all: the freed slot must not start a queued layer first.
        limit.clearQueue();
        if (!stop.signal.aborted) stop.abort(err);
        throw err;
      } finally {
        running.delete(task);
      }
    }),
  );
  try {
    return await Promise.all(tasks);
  } catch (err) {
    // Cleared tasks never settle: wait only for those that started.
    await Promise.allSettled([...running]);
    throw err;
  }
}

/**
 * What the index keeps of a header, for hundreds of thousands of them: no atime or ctime (no
 * output carries them), and one copy of each owner name and whole-second mtime, shared by the
 * headers that have it (nothing changes a header once read).
 */
function headerCompactor(): (header: TarHeader) => TarHeader {
  const limit = 1 << 16;
  const names = new Map<string, string>();
  const times = new Map<number, TarTime>();
  const shared = (value: string) => {
    const known = names.get(value);
    if (known !== undefined) return known;
    if (names.size < limit) names.set(value, value);
    return value;
  };
  return (read) => {
    const header = withoutAccessTimes(read);
    if (header.uname !== undefined) header.uname = shared(header.uname);
    if (header.gname !== undefined) header.gname = shared(header.gname);
    if (header.mtime.nsec === 0) {
      const known = times.get(header.mtime.sec);
      if (known) header.mtime = known;
      else if (times.size < limit) times.set(header.mtime.sec, header.mtime);
    }
    return header;
  };
}

async function indexLayer(
  source: ImageSource,
  layer: Descriptor,
  diffId: string,
  index: number,
  spoolPath: string | undefined,
  signal: AbortSignal,
  compact: (header: TarHeader) => TarHeader,
): Promise<IndexedLayer> {
  signal.throwIfAborted();
  const what = `layer ${index + 1} (${layer.digest.slice(0, 19)})`;
  const verified = await openLayerTar(source, layer, diffId, what);
  const spool = spoolPath !== undefined ? new SpoolStream(spoolPath) : undefined;
  // Destroying the end of the chain stops all of it, the download included (pipeOn).
  const tar: Readable = spool ? pipeOn(verified, spool) : verified;
  const stopReading = () => tar.destroy(signal.reason as Error);
  if (signal.aborted) stopReading();
  else signal.addEventListener('abort', stopReading, { once: true });
  let complete = false;
  try {
    const entries: IndexedEntry[] = [];
    const spans = spool ? new EntrySpans() : undefined;
    let ordinal = 0;
    // Bodies are not touched: the reader skips them without making a stream for each.
    for await (const entry of readTar(tar, { what })) {
      entries.push({ layer: index, ordinal: ordinal++, header: compact(entry.header) });
      spans?.add(entry.start, entry.end, entry.header.type === 'file' ? entry.header.size : 0, entry.plain);
    }
    await drainRest(tar);
    complete = true;
    return { entries, uncompressedBytes: verified.bytesSeen, ...(spoolPath !== undefined && { spool: spoolPath, spans: spans!.trim() }) };
  } finally {
    signal.removeEventListener('abort', stopReading);
    if (!complete && !tar.destroyed) tar.destroy();
    const spooled = await spool?.settle();
    if (complete && spool && !spooled) throw new Error(`${what}: spool ${spoolPath} was not written completely`);
  }
}

export type OutputLayer = { path: string; digest: string; size: number; diffId: string; uncompressedSize: number };

export type WriteOptions = {
  compression: Compression;
  level?: number;
  /** Clamp every mtime to this (SOURCE_DATE_EPOCH) for reproducible layers. */
  sourceDateEpoch?: number;
  tmpDir: string;
  /** Per input layer: its verified uncompressed tar from pass 1, read instead of the blob. */
  spools?: Array<string | undefined>;
  /** Per spooled layer: where its entries lie, so those written unchanged are copied as bytes. */
  spans?: Array<EntrySpans | undefined>;
  onBytes?: (bytes: number) => void;
  /**
   * Called at the start for each output k: its compressed bytes as they are written (read them
   * or destroy them: a copy left unread holds the output back), and its temp file's digest and
   * size once complete (rejects when the output fails).
   */
  live?: (k: number, bytes: Readable, stored: Promise<{ digest: string; size: number }>) => void;
};

function clampTime(time: TarTime, epoch: number | undefined): TarTime {
  return epoch !== undefined && time.sec >= epoch ? { sec: epoch, nsec: 0 } : time;
}

/** Output headers carry mtime only: atime and ctime change on every read and would break determinism. */
function withoutAccessTimes(header: TarHeader): TarHeader {
  if (header.atime === undefined && header.ctime === undefined) return header;
  const { atime: _atime, ctime: _ctime, ...rest } = header;
  return rest;
}

/**
 * The header a step writes, times clamped: the entry's own header object when nothing changes
 * (nearly always; this runs for every entry, and pass 2 owns the headers it reads).
 */
function outputHeader(header: TarHeader, epoch: number | undefined, step?: EmitStep): TarHeader {
  const named = stepHeader(withoutAccessTimes(header), step);
  const mtime = clampTime(named.mtime, epoch);
  return mtime === named.mtime ? named : { ...named, mtime };
}

/** Files up to this size are read whole (one buffer, no stream per entry); larger ones stream. */
const BUFFERED_FILE = 1 << 20;

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
    const compressed: Readable = pipeOn(uncompressed, outputCompressor(options.compression, options.level));
    const copy = options.live ? pipeOn(compressed, new LiveCopy()) : undefined;
    const file = writeFileAtomically(copy ?? compressed, join(options.tmpDir, `layer-${k}.blob`));
    if (copy) options.live!(k, copy.live, file);
    return file;
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
    /** Writes one entry read from the input where the plan puts it (code: 1 + output, or SPECIAL with steps). */
    const writeEntry = async (entry: TarEntry, code: number, steps: EmitStep[] | undefined) => {
      const { header } = entry;
      let body: Readable | Buffer | undefined;
      if (header.type === 'file' && header.size <= BUFFERED_FILE) {
        body = await entry.buffer();
        options.onBytes?.(body.length);
      } else if (header.type === 'file') {
        // Count through a transform: a 'data' listener would start the body flowing before the writer reads it.
        body = options.onBytes ? pipeOn(entry.body, new ByteCounter(options.onBytes)) : entry.body;
      }
      const first = steps?.[0];
      await writers[first ? first.output : code - 1]!.add(outputHeader(header, options.sourceDateEpoch, first), body);
      if (steps) for (let i = 1; i < steps.length; i++) await writers[steps[i]!.output]!.add(outputHeader(header, options.sourceDateEpoch, steps[i]));
    };
    for (const [index, layer] of layers.entries()) {
      if (index < plan.fromLayer) continue; // kept as it is
      const writes = plan.writes[index]!;
      if (writes.outputs.length === 0) continue; // nothing of it survives
      const what = `layer ${index + 1} (${layer.digest.slice(0, 19)})`;
      const spool = options.spools?.[index];
      const spans = options.spans?.[index];
      if (spool !== undefined && spans && options.sourceDateEpoch === undefined) {
        await copySpooledLayer(new SpoolReader(spool, what), spans, writes, writers, writeEntry, options.onBytes, () => failed);
        await rm(spool, { force: true }); // its disk space is free from here on
        continue;
      }
      const { outputs, special } = writes;
      // Pass 1 verified the blob and, for a spool, the tar; else the diff_id check alone proves
      // the content is the same again, and needs the whole layer read.
      const tar = spool !== undefined ? createReadStream(spool, { highWaterMark: 1 << 20 }) : await openLayerTar(source, layer, diffIds[index] ?? '', what, false);
      let ordinal = 0;
      for await (const entry of readTar(tar, { what })) {
        if (failed) throw failed;
        const code = ordinal < outputs.length ? outputs[ordinal]! : 0;
        const steps = code === SPECIAL ? special.get(ordinal) : undefined;
        ordinal++;
        if (code !== 0) await writeEntry(entry, code, steps); // else shadowed: the reader skips its body
        if (spool !== undefined && ordinal >= outputs.length) break; // the rest of a verified spool holds nothing we write
      }
      if (spool === undefined) await drainRest(tar);
      else {
        tar.destroy();
        await rm(spool, { force: true });
      }
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

/**
 * A spooled layer by its spans: each run of neighbouring entries that go unchanged to the same
 * output is copied as the bytes it is (no parsing, no encoding, one piece per chunk of the
 * file); every other written entry is read from its own bytes and written as usual.
 */
async function copySpooledLayer(
  reader: SpoolReader,
  spans: EntrySpans,
  { outputs, special }: LayerWrites,
  writers: TarWriter[],
  writeEntry: (entry: TarEntry, code: number, steps: EmitStep[] | undefined) => Promise<void>,
  onBytes: ((bytes: number) => void) | undefined,
  failure: () => unknown,
): Promise<void> {
  // Ordinals first..last, neighbours in the file, all for one output.
  let run: { output: number; first: number; last: number } | undefined;
  const flush = async () => {
    if (!run) return;
    const { output, first, last } = run;
    run = undefined;
    let at = spans.start[first]!;
    let next = first;
    for await (const piece of reader.range(at, spans.end[last]!)) {
      await writers[output]!.addRaw(piece);
      at += piece.length;
      // Progress as the entries are through, one by one, as for those written one by one.
      for (; next <= last && spans.end[next]! <= at; next++) if (spans.size[next]! > 0) onBytes?.(spans.size[next]!);
    }
  };
  try {
    for (let ordinal = 0; ordinal < outputs.length; ordinal++) {
      const code = outputs[ordinal]!;
      if (code === 0) continue;
      if (code > 0 && spans.plain[ordinal] === 1) {
        if (run && run.output === code - 1 && spans.end[run.last] === spans.start[ordinal]) run.last = ordinal;
        else {
          await flush();
          run = { output: code - 1, first: ordinal, last: ordinal };
        }
        continue;
      }
      await flush();
      const failed = failure();
      if (failed) throw failed;
      for await (const entry of readTar(Readable.from(reader.range(spans.start[ordinal]!, spans.end[ordinal]!), { objectMode: false }), { what: reader.what })) {
        await writeEntry(entry, code, code === SPECIAL ? special.get(ordinal) : undefined);
      }
    }
    await flush();
  } finally {
    reader.close();
  }
}
