import { once } from 'node:events';
import { posix } from 'node:path';
import { createGzip, type Gzip } from 'node:zlib';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { encodeName } from '../../imagebuilder/tar/fields.js';

/**
 * The `tar-split.json.gz` Docker's layer store keeps for every layer
 * (`image/overlay2/layerdb/sha256/<chainid>/`), written as github.com/vbatts/tar-split writes it:
 * asm.NewInputTarStream cuts the layer tar into raw segments and file entries, and
 * storage.NewJSONPacker writes one JSON document per entry, through Go's gzip. Docker puts the
 * exact layer tar back together from it (plus the files on disk) for `docker save` and `push`,
 * checking each file's CRC-64. A pre-pull that extracts layers itself must leave this file, or
 * Docker cannot give the layer back.
 *
 * What goes where (tar-split's forked archive/tar with RawAccounting):
 * - one segment (type 2) for all raw bytes between two payloads: the previous payload's padding,
 *   extension headers (PAX x/g data, GNU L/K data) and the entry's own header block;
 * - one file entry (type 1) per entry Go's tar reader returns (a PAX `g` header is one, with
 *   size 0), whatever its size; the CRC-64 only when the size is above 0;
 * - after the last entry, one segment with the last padding and the end-of-archive blocks;
 * - then what follows them as tar-split reads it (Docker 20.10 here: a loop of Read calls into a
 *   1 MiB buffer, one segment per Read, the last one the Read that met EOF): one segment per
 *   chunk the walker passes on (at most 1 MiB each), then an empty one (`"payload":""`). Where a
 *   Read splits that tail depends on the stream under Docker, so any split is as right as
 *   another: put back together, the segments give the same bytes.
 *
 * Written by hand: no npm package writes tar-split metadata.
 */

/** What a raw tar walker tells the recorder, in stream order. */
export interface TarSplitSink {
  /** Raw bytes that are no file payload (headers, extension data, padding, end blocks, trailing bytes). */
  segment(raw: Buffer): void;
  /**
   * An entry, after the segment bytes of its headers: its name as the tar gives it (lone
   * surrogates U+DC00+byte for bytes that are not UTF-8, see imagebuilder/tar/fields.ts), its
   * size and, when the size is above 0, the CRC-64/ISO of its payload (8 bytes, big-endian).
   */
  file(name: string, size: number, crc64: Buffer | undefined): void;
  /** The end-of-archive blocks have been passed on: later segment bytes are what trails the archive. */
  end(): void;
  /** Resolves when the sink can take more (the walker awaits it between input chunks). */
  drained?(): Promise<void>;
}

/** tar-split's storage.Type. */
const FILE_TYPE = 1;
const SEGMENT_TYPE = 2;

/** tar-split reads what trails the archive into a buffer of this size. */
const TRAILING_CHUNK = 1024 * 1024;

/** Encoded JSON gathered before it goes to gzip: fewer, larger writes. */
const BATCH_CHARS = 64 * 1024;

/**
 * Records one layer's tar-split metadata while its tar is walked, and gzips the JSON lines as
 * they come (memory stays bounded by the compressed output, not the tar).
 */
export class TarSplitRecorder implements TarSplitSink {
  // Level 1: the JSON of a layer of 150k files is over 100 MB, and Docker reads any gzip (measured: level 6 was 4% of a large pre-pull's CPU).
  private readonly gzip: Gzip = createGzip({ level: 1 });
  private readonly output: Buffer[] = [];
  private readonly done: Promise<void>;
  private batch = '';
  private position = 0;
  private pending: Buffer[] = [];
  private ended = false;
  private readonly seen = new Set<string>();
  private finished = false;

  constructor() {
    this.gzip.on('data', (chunk: Buffer) => this.output.push(chunk));
    this.done = new Promise((resolve, reject) => {
      this.gzip.on('end', resolve);
      this.gzip.on('error', reject);
    });
    this.done.catch(() => {}); // reported by finish()
  }

  segment(raw: Buffer): void {
    this.checkOpen();
    if (raw.length === 0) return;
    if (this.ended) {
      // What trails the archive: written at once, a segment per chunk (a Read in tar-split).
      for (let at = 0; at < raw.length; at += TRAILING_CHUNK) this.writeSegment(raw.subarray(at, at + TRAILING_CHUNK));
      return;
    }
    // Copied: the walker may reuse its buffers, and segments are small (headers, padding).
    this.pending.push(Buffer.from(raw));
  }

  file(name: string, size: number, crc64: Buffer | undefined): void {
    this.checkOpen();
    if (this.ended) throw new BuildfleetError('format', `tar-split: entry ${JSON.stringify(name)} after the end of the archive`);
    if (!Number.isSafeInteger(size) || size < 0) throw new BuildfleetError('format', `tar-split: entry ${JSON.stringify(name)} has size ${size}`);
    if (size > 0 && crc64?.length !== 8) throw new BuildfleetError('format', `tar-split: entry ${JSON.stringify(name)} of ${size} bytes needs its 8-byte CRC-64`);
    // tar-split's packer refuses a second entry for the same path, so Docker could not take such a layer.
    const cleaned = goClean(name);
    if (this.seen.has(cleaned)) throw new BuildfleetError('format', `tar-split: duplicates of file paths not supported (${JSON.stringify(name)})`);
    this.seen.add(cleaned);
    this.flushSegment();
    this.write(fileLine(name, size, size > 0 ? crc64 : undefined, this.position++));
  }

  end(): void {
    this.checkOpen();
    if (this.ended) return;
    this.flushSegment();
    this.ended = true;
  }

  /**
   * Resolves once gzip has taken in what was recorded so far (call it between input chunks to
   * keep memory bounded when the walker outruns the compressor).
   */
  async drained(): Promise<void> {
    // Asks the stream, not a flag of our own: a 'drain' that came before this call still counts.
    if (this.gzip.writableNeedDrain) await once(this.gzip, 'drain');
  }

  /** The gzip-compressed JSON lines; the recorder takes nothing after this. */
  async finish(): Promise<Buffer> {
    this.checkOpen();
    this.end();
    // tar-split's last Read, the one that met EOF, read nothing: an empty segment.
    this.writeSegment(Buffer.alloc(0));
    this.finished = true;
    if (this.batch) this.gzip.write(this.batch);
    this.batch = '';
    this.gzip.end();
    await this.done;
    return Buffer.concat(this.output);
  }

  private checkOpen(): void {
    if (this.finished) throw new Error('tar-split: the recorder is already finished');
  }

  private flushSegment(): void {
    if (this.pending.length === 0) return;
    const raw = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    this.pending = [];
    this.writeSegment(raw);
  }

  private writeSegment(raw: Buffer): void {
    this.write(`{"type":${SEGMENT_TYPE},"payload":"${raw.toString('base64')}","position":${this.position++}}\n`);
  }

  private write(line: string): void {
    this.batch += line;
    if (this.batch.length < BATCH_CHARS) return;
    this.gzip.write(this.batch);
    this.batch = '';
  }
}

/**
 * One file entry as Go's encoding/json writes tar-split's storage.Entry: fields in struct order
 * (type, name, name_raw, size, payload, position), `name`, `name_raw` and `size` omitted when
 * empty, `payload` null without a checksum; a name that is not valid UTF-8 goes, as bytes, to
 * `name_raw` (base64).
 */
export function fileLine(name: string, size: number, crc64: Buffer | undefined, position: number): string {
  let line = `{"type":${FILE_TYPE}`;
  if (name !== '') {
    line += LONE_SURROGATE.test(name) ? `,"name_raw":"${encodeName(name).toString('base64')}"` : `,"name":${goJsonString(name)}`;
  }
  if (size !== 0) line += `,"size":${size}`;
  line += crc64 ? `,"payload":"${crc64.toString('base64')}"` : ',"payload":null';
  return `${line},"position":${position}}\n`;
}

/**
 * decodeName turns exactly the bytes that are not UTF-8 into lone surrogates, so a name without
 * one is valid UTF-8 (Go's utf8.ValidString) and one with them is not.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** What Go's encoding/json escapes (with its default HTML escaping) in a valid UTF-8 string. */
const GO_ESCAPED = /[\u0000-\u001f"\\<>&\u2028\u2029]/g;

/** A string as Go's encoding/json writes it: \" \\ \n \r \t, every other control character and < > & U+2028 U+2029 as \u00xx. */
export function goJsonString(text: string): string {
  return `"${text.replace(GO_ESCAPED, goEscape)}"`;
}

function goEscape(char: string): string {
  switch (char) {
    case '"':
      return '\\"';
    case '\\':
      return '\\\\';
    case '\n':
      return '\\n';
    case '\r':
      return '\\r';
    case '\t':
      return '\\t';
    default:
      return `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;
  }
}

/** Go's filepath.Clean on Linux (the packer's duplicate check compares cleaned names). */
export function goClean(name: string): string {
  if (name === '') return '.';
  const normal = posix.normalize(name);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}
