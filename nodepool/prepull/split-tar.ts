import { BuildfleetError } from '../../imagebuilder/errors.js';
import { BLOCK, checksumMatches, decodeName, fieldBytes, isZeroBlock, padding, parseNumeric, parsePaxInteger, parsePaxRecords, type PaxRecord } from '../../imagebuilder/tar/fields.js';
import { crc64Hasher, type Crc64Hasher } from './crc64.js';
import type { TarSplitSink } from './tar-split.js';

/**
 * A raw tar walker that reads a layer tar as tar-split's fork of Go's archive/tar does (what
 * Docker's layer store runs every layer through): 512-byte blocks; ustar, GNU and v7 headers;
 * names from PAX `path`, GNU `L`, or ustar prefix + name; sizes in octal or base-256; extension
 * headers (PAX x and g, GNU L and K) belonging to the next entry's header segment. It hands
 * every raw byte that is no payload to a TarSplitSink, in stream order, and every entry with
 * its payload's CRC-64 to the sink and (optionally) to a visitor that extracts it.
 *
 * Written by hand: imagebuilder/tar's reader hides the raw bytes and tar-stream loses PAX
 * binary values; tar-split needs the bytes exactly as they are.
 */

export type SplitTarEntry = {
  /** As Go's reader gives it: lone surrogates U+DC00+byte for bytes that are not UTF-8. */
  name: string;
  linkname: string;
  /** The type byte as a character ('0', '1', '2', '5', ...); a ustar '\0' is already '0' or '5'. */
  typeflag: string;
  /** The entry's size (header or PAX). */
  size: number;
  /** Payload bytes that follow in the tar: 0 for links, directories, devices and fifos whatever `size` says. */
  dataSize: number;
  /** The entry's own header block (mode, uid, gid, mtime, devices: imagebuilder/tar/fields.ts parses them). */
  header: Buffer;
  /** Records of its PAX `x` header (xattrs, times, ids), binary values; empty when there is none. */
  pax: PaxRecord[];
  /** The raw bytes of its extension headers (PAX x, GNU L and K, each with its data and padding), before `header`: an extractor gets them as they are. */
  extensions: Buffer[];
};

export type SplitTarVisitor = {
  /** Each entry before its payload. PAX global (`g`) headers are not entries here: Docker ignores them. */
  entry?(entry: SplitTarEntry): void | Promise<void>;
  /** The current entry's payload, in order; a chunk shares memory with the input: do not change it. */
  data?(chunk: Buffer): void | Promise<void>;
};

export type SplitTarSummary = { entries: number; payloadBytes: number; archiveBytes: number };

/** Limit for PAX and GNU long-name data (held in memory). */
const MAX_META = 16 << 20;

/** Types with no payload, whatever their size field says (Go's isHeaderOnlyType). */
const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);

/**
 * Walks the tar in `input` (a Readable of the uncompressed layer, or any iterable of chunks), feeding `sink` and
 * `visitor`; resolves when the input has ended, everything after the end-of-archive blocks
 * included. Corrupt or truncated input, and sparse files (which tar-split cannot put back), are
 * BuildfleetErrors naming `what`.
 */
export async function splitTar(input: AsyncIterable<Buffer> | Iterable<Buffer>, sink: TarSplitSink, visitor: SplitTarVisitor = {}, what = 'layer'): Promise<SplitTarSummary> {
  const chunks = Symbol.asyncIterator in input ? input[Symbol.asyncIterator]() : (async function* () { yield* input; })();
  const source = new ChunkSource(chunks, what);
  const summary: SplitTarSummary = { entries: 0, payloadBytes: 0, archiveBytes: 0 };
  const fail = (message: string) => new BuildfleetError('format', `${what}: ${message}`);
  let owedPadding = 0; // the last data's padding: Go reads it before the next header, into its segment
  let pax: PaxRecord[] = [];
  let longName: Buffer | undefined;
  let longLink: Buffer | undefined;
  let extensions: Buffer[] = [];
  let paddingOfExtension = false;
  for (;;) {
    if (owedPadding > 0) {
      const bytes = await source.exact(owedPadding, 'padding');
      sink.segment(bytes);
      if (paddingOfExtension) extensions.push(bytes);
    }
    owedPadding = 0;
    paddingOfExtension = false;
    await sink.drained?.();
    const block = await source.exact(BLOCK, 'header', true);
    if (block.length === 0) break; // the input ended at a block boundary: no end-of-archive blocks
    sink.segment(block);
    if (isZeroBlock(block)) {
      const second = await source.exact(BLOCK, 'end-of-archive block', true);
      sink.segment(second);
      if (second.length > 0 && !isZeroBlock(second)) throw fail('a zero block followed by a header (corrupt archive)');
      break;
    }
    if (!checksumMatches(block, what)) throw fail(`bad header checksum at byte ${source.offset - BLOCK}`);
    const typeflag = String.fromCharCode(block[156]!);
    const size = parseNumeric(block.subarray(124, 136), what);
    for (const [at, length] of [[100, 8], [108, 8], [116, 8], [136, 12]] as const) parseNumeric(block.subarray(at, at + length), what);

    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      if (size > MAX_META) throw fail(`extension header of ${size} bytes`);
      const data = await source.exact(size, 'extension header');
      sink.segment(data);
      owedPadding = padding(size);
      if (typeflag !== 'g') {
        extensions.push(block, data);
        paddingOfExtension = true;
      }
      if (typeflag === 'L') longName = fieldBytes(data, 0, data.length);
      else if (typeflag === 'K') longLink = fieldBytes(data, 0, data.length);
      else if (typeflag === 'x') pax = parsePaxRecords(data, what);
      else {
        // Go's reader returns a global header as an entry of its own (size 0): tar-split records
        // it. Extension headers read before it are dropped with it (they were Next()'s locals).
        const name = paxValue(parsePaxRecords(data, what), 'path') ?? headerName(block);
        sink.file(decodeName(name), 0, undefined);
        summary.entries++;
        pax = [];
        longName = longLink = undefined;
        extensions = [];
      }
      continue;
    }

    if (typeflag === 'S' || pax.some(([key]) => key.startsWith('GNU.sparse.'))) {
      throw new BuildfleetError('unsupported', `${what}: sparse file ${JSON.stringify(decodeName(headerName(block)))}: tar-split cannot record it as Docker would`);
    }
    const nameBytes = longName ?? paxValue(pax, 'path') ?? headerName(block);
    const linkBytes = longLink ?? paxValue(pax, 'linkpath') ?? fieldBytes(block, 157, 100);
    const paxSize = paxValue(pax, 'size');
    const entrySize = paxSize ? parsePaxInteger(paxSize.toString('latin1'), 'size', what) : size;
    let type = typeflag;
    if (type === '\0') type = nameBytes[nameBytes.length - 1] === 0x2f ? '5' : '0'; // legacy: a trailing slash is a directory
    const dataSize = HEADER_ONLY.has(type) ? 0 : entrySize;
    const name = decodeName(nameBytes);
    const records = pax;
    const raw = extensions;
    pax = [];
    extensions = [];
    longName = longLink = undefined;

    await visitor.entry?.({ name, linkname: decodeName(linkBytes), typeflag: type, size: entrySize, dataSize, header: block, pax: records, extensions: raw });
    const crc = entrySize > 0 ? new PayloadCrc(dataSize) : undefined;
    for (let left = dataSize; left > 0; ) {
      const chunk = await source.upTo(left);
      left -= chunk.length;
      await crc?.add(chunk);
      await visitor.data?.(chunk);
    }
    sink.file(name, entrySize, await crc?.sum());
    summary.entries++;
    summary.payloadBytes += dataSize;
    owedPadding = padding(dataSize);
  }
  sink.end();
  for await (const rest of source.rest()) {
    sink.segment(rest);
    await sink.drained?.();
  }
  summary.archiveBytes = source.offset;
  return summary;
}

/**
 * A payload's CRC-64, summed on the thread pool in batches of about 1 MiB while the walker reads
 * on (one batch running, one filling): a pool round trip per input chunk would cost more than
 * the sum. Chunks are kept until summed, so the input must not reuse its buffers.
 */
class PayloadCrc {
  private static readonly BATCH = 1 << 20;
  private readonly hasher: Crc64Hasher;
  private batch: Buffer[] = [];
  private bytes = 0;
  private running: Promise<void> | undefined;

  constructor(size: number) {
    this.hasher = crc64Hasher(size);
  }

  async add(chunk: Buffer): Promise<void> {
    this.batch.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes < PayloadCrc.BATCH) return;
    await this.running;
    this.send();
  }

  async sum(): Promise<Buffer> {
    await this.running;
    if (this.batch.length > 0) this.send();
    await this.running;
    return this.hasher.final();
  }

  private send(): void {
    const buffers = this.batch;
    this.batch = [];
    this.bytes = 0;
    this.running = this.hasher.update(buffers);
  }
}

/** The value of the last record with this key, unless empty (Go keeps the header's value then). */
function paxValue(records: PaxRecord[], key: string): Buffer | undefined {
  let value: Buffer | undefined;
  for (const [k, v] of records) if (k === key) value = v;
  return value && value.length > 0 ? value : undefined;
}

/** ustar and star put a prefix before the name; GNU and v7 headers have none. */
function headerName(block: Buffer): Buffer {
  const name = fieldBytes(block, 0, 100);
  const magic = block.toString('latin1', 257, 263);
  if (magic !== 'ustar\0') return name;
  const star = block.toString('latin1', 508, 512) === 'tar\0';
  const prefix = fieldBytes(block, 345, star ? 131 : 155);
  return prefix.length > 0 ? Buffer.concat([prefix, Buffer.from('/'), name]) : name;
}

/** The input's chunks, read by exact counts (headers) or as they come (payloads). */
class ChunkSource {
  offset = 0;
  private chunk: Buffer = Buffer.alloc(0);
  private at = 0;
  private ended = false;

  constructor(
    private readonly chunks: AsyncIterator<Buffer>,
    private readonly what: string,
  ) {}

  /** Exactly n bytes (a copy); with `orNothing`, an empty buffer when the input ends before the first byte. */
  async exact(n: number, part: string, orNothing = false): Promise<Buffer> {
    if (this.at + n <= this.chunk.length) {
      const bytes = Buffer.from(this.chunk.subarray(this.at, this.at + n));
      this.at += n;
      this.offset += n;
      return bytes;
    }
    const bytes = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      if (this.at === this.chunk.length && !(await this.next())) {
        if (filled === 0 && orNothing) return Buffer.alloc(0);
        throw new BuildfleetError('format', `${this.what}: truncated tar (the input ended inside a ${part} at byte ${this.offset})`);
      }
      const take = Math.min(n - filled, this.chunk.length - this.at);
      this.chunk.copy(bytes, filled, this.at, this.at + take);
      this.at += take;
      filled += take;
      this.offset += take;
    }
    return bytes;
  }

  /** Between 1 and n bytes, shared with the input chunk. */
  async upTo(n: number): Promise<Buffer> {
    if (this.at === this.chunk.length && !(await this.next())) {
      throw new BuildfleetError('format', `${this.what}: truncated tar (the input ended inside a file's data at byte ${this.offset})`);
    }
    const take = Math.min(n, this.chunk.length - this.at);
    const bytes = this.chunk.subarray(this.at, this.at + take);
    this.at += take;
    this.offset += take;
    return bytes;
  }

  /** Everything left. */
  async *rest(): AsyncGenerator<Buffer> {
    for (;;) {
      if (this.at < this.chunk.length) {
        const bytes = this.chunk.subarray(this.at);
        this.offset += bytes.length;
        this.at = this.chunk.length;
        yield bytes;
      }
      if (!(await this.next())) return;
    }
  }

  private async next(): Promise<boolean> {
    if (this.ended) return false;
    for (;;) {
      const result = await this.chunks.next();
      if (result.done) {
        this.ended = true;
        return false;
      }
      if (result.value.length === 0) continue;
      this.chunk = result.value;
      this.at = 0;
      return true;
    }
  }
}
