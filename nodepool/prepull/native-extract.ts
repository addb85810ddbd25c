import { pipeline } from 'node:stream/promises';
import { BuildfleetError, type ErrorKind } from '../../imagebuilder/errors.js';
import { explainStreamError } from '../../imagebuilder/compress/streams.js';
import { native, type NativeLayerExtract } from '../../imagebuilder/native/index.js';
import type { Compression } from '../../imagebuilder/oci/media-types.js';
import { decodeName } from '../../imagebuilder/tar/fields.js';
import { MagicCheck, namingLayer, type CompressedInput, type ExtractedLayer, type ExtractRequest } from './layer-extract.js';
import { UnsupportedLayer } from './layer-walk.js';
import { TarSplitRecorder, type TarSplitSink } from './tar-split.js';

/**
 * The same extraction as layer-extract.ts, done by the native addon (imagebuilder/native/
 * layer_extract.c) on the thread pool: gunzip, diff_id, the tar walk, CRC-64s and the files,
 * with no GNU tar, no pipe, and no per-entry work on the main thread but tar-split's JSON.
 * Measured on the large preset's 4-layer image, 2 cores: see install.ts.
 */

/** Whether this layer can go the native way: the addon is built and the layer is gzip or plain (zstd goes through its CLI). */
export function nativeExtraction(compression: Compression): boolean {
  return compression !== 'zstd' && native()?.layerExtract !== undefined;
}

/** Compressed bytes handed to the addon at once: fewer pool round trips, and the next batch fills while one runs. */
const BATCH_BYTES = 1 << 20;

export async function extractLayerNatively(compressed: CompressedInput, request: ExtractRequest, signal: AbortSignal): Promise<ExtractedLayer> {
  const { compression, diffDir, what } = request;
  const extractor = native()!.layerExtract!(diffDir, compression === 'gzip');
  const tarSplit = new TarSplitRecorder();
  const stop = () => extractor.abort();
  signal.addEventListener('abort', stop, { once: true });
  let running: Promise<void> | undefined;
  let finished = false;
  const send = async (buffers: Buffer[]) => {
    replay(await extractor.push(buffers).catch((err: Error) => Promise.reject(nativeError(err, what, signal))), tarSplit);
    await tarSplit.drained?.();
  };
  try {
    await pipeStages(
      [
        ...compressed,
        new MagicCheck(compression, what),
        async (source: AsyncIterable<Buffer>) => {
          let batch: Buffer[] = [];
          let bytes = 0;
          for await (const chunk of source) {
            batch.push(chunk);
            bytes += chunk.length;
            if (bytes < BATCH_BYTES) continue;
            await running;
            running = send(batch);
            running.catch(() => {}); // awaited before the next batch or at the end
            batch = [];
            bytes = 0;
          }
          await running;
          running = undefined;
          if (batch.length > 0) await send(batch);
        },
      ],
      { signal },
    ).catch((err: Error) => Promise.reject(err instanceof BuildfleetError || err instanceof UnsupportedLayer ? err : namingLayer(explainStreamError(err), err, what)));
    finished = true;
    const result = await extractor.finish().catch((err: Error) => Promise.reject(nativeError(err, what, signal)));
    replay(result.records, tarSplit);
    return { diffId: `sha256:${result.diffId}`, entries: result.entries, sizeOnDisk: result.sizeOnDisk, tarSplit: await tarSplit.finish() };
  } catch (err) {
    // Nothing may write into the dir once this returns: the running batch ends, then the
    // extractor lets go of its files (an aborted finish closes them).
    await running?.catch(() => {});
    if (!finished) await letGo(extractor);
    throw err;
  } finally {
    signal.removeEventListener('abort', stop);
  }
}

async function letGo(extractor: NativeLayerExtract): Promise<void> {
  extractor.abort();
  await extractor.finish().catch(() => {});
}

/** stream/promises' pipeline over an array of stages ending in an async function (its types take no such array). */
const pipeStages = pipeline as unknown as (stages: unknown[], options: { signal: AbortSignal }) => Promise<void>;

/** The addon's records, in order, into the tar-split recorder (see layer_extract.c). */
function replay(records: Buffer, sink: TarSplitSink): void {
  for (let at = 0; at < records.length; ) {
    const type = records[at]!;
    if (type === 0x45) {
      sink.end();
      at += 1;
      continue;
    }
    const length = records.readUInt32LE(at + 1);
    const bytes = records.subarray(at + 5, at + 5 + length);
    at += 5 + length;
    if (type === 0x53) {
      sink.segment(bytes);
      continue;
    }
    const size = Number(records.readBigUInt64LE(at));
    const hasCrc = records[at + 8] === 1;
    sink.file(decodeName(bytes), size, hasCrc ? records.subarray(at + 9, at + 17) : undefined);
    at += hasCrc ? 17 : 9;
  }
}

const KINDS = new Set<string>(['format', 'unsupported', 'environment']);

function nativeError(err: Error, what: string, signal: AbortSignal): Error {
  const tab = err.message.indexOf('\t');
  const kind = err.message.slice(0, tab);
  const message = `${what}: ${err.message.slice(tab + 1)}`;
  if (kind === 'aborted') return signal.aborted ? (signal.reason as Error) : new BuildfleetError('environment', `${what}: extraction stopped`);
  if (kind === 'layer') return new UnsupportedLayer(message);
  return new BuildfleetError(KINDS.has(kind) ? (kind as ErrorKind) : 'environment', message);
}
