import type { Readable } from 'node:stream';
import { BuildfleetError } from '../errors.js';
import { NO_XATTRS, normaliseEntryPath, type TarEntryType, type TarHeader } from './entry.js';
import {
  BLOCK,
  checksumMatches,
  decodeName,
  fieldBytes,
  isZeroBlock,
  padding,
  parseNumeric,
  parsePaxInteger,
  parsePaxRecords,
  parsePaxTime,
  percentDecode,
  type PaxRecord,
} from './fields.js';
import { ByteSource } from './source.js';
import { EntryBody } from './body.js';
import { paxSparse, piecesFromMap, readOldGnuSparse, readSparse1Map, type Piece, type SparseMap } from './sparse.js';

/**
 * Streaming, lossless tar reader: ustar, old GNU and v7 headers, GNU long names, PAX records
 * with binary values, base-256 numbers, GNU sparse files (delivered dense). Memory holds one
 * header's metadata and one body chunk, never a whole body.
 */

export type TarEntry = {
  header: TarHeader;
  /** The content as a stream; made on first use, so a body nobody asks for costs no stream. */
  readonly body: Readable;
  /**
   * The whole content in one buffer, for small files, instead of `body` (not both): no stream
   * per entry. May share memory with the input's chunks; do not write to it.
   */
  buffer(): Promise<Buffer>;
  /**
   * Where the entry lies in the archive: from its first header block (extension headers
   * included) to the end of its data and padding.
   */
  start: number;
  end: number;
  /**
   * Its bytes start..end are one POSIX ustar header block that says all there is (no extension
   * headers, no sparse map, no other format's fields, a name already in normal form) and its
   * data: another archive can take them as they are.
   */
  plain: boolean;
};

export type ReadTarOptions = {
  /** Names the input in error messages ("layer 3 (sha256:...)"). */
  what?: string;
  /**
   * PAX global ('g') records. 'ignore' (default) does what Docker and containerd do when they
   * extract a layer (Go archive/tar returns the 'g' header as an entry and both skip it), so the
   * result matches the runtime. 'apply' follows POSIX: the records apply to every later entry.
   */
  globalHeaders?: 'ignore' | 'apply';
};

/** Limit for PAX and GNU long-name data (all held in memory). */
const MAX_META = 16 << 20;

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
};

type Parsed = { header: TarHeader; pieces: Piece[]; dataBytes: number; padBytes: number; start: number; plain: boolean };

function formatError(message: string): BuildfleetError {
  return new BuildfleetError('format', message);
}

/**
 * The entries of a tar stream. Consume (or `resume()`) each body before asking for the next
 * entry; a body nobody reads is skipped when the next entry is requested. After the end of the
 * archive the input is left readable (whatever follows the end blocks, e.g. padding, is still
 * there); on an error or an early `break` it is destroyed.
 */
export async function* readTar(input: Readable, options: ReadTarOptions = {}): AsyncGenerator<TarEntry, void, undefined> {
  const what = options.what ?? 'tar';
  const src = new ByteSource(input);
  const headers = new HeaderReader(src, what, options.globalHeaders === 'apply');
  let body: EntryBody | undefined;
  let clean = false;
  try {
    for (;;) {
      const parsed = await headers.next();
      if (!parsed) break;
      const truncated = () => formatError(`${what}: truncated tar (input ends inside the data of "${parsed.header.path}")`);
      const current = (body = new EntryBody(src, parsed.pieces, parsed.dataBytes, parsed.padBytes, truncated));
      yield {
        header: parsed.header,
        get body() {
          return current.stream;
        },
        buffer: () => current.buffer(),
        start: parsed.start,
        end: src.position + parsed.dataBytes + parsed.padBytes,
        plain: parsed.plain,
      };
      await body.finish();
      body = undefined;
    }
    clean = true;
  } finally {
    body?.abort();
    if (clean) src.release();
    else src.destroy();
  }
}

function ownXattrs(header: TarHeader): Map<string, Buffer> {
  if (header.xattrs === NO_XATTRS) header.xattrs = new Map();
  return header.xattrs;
}

class HeaderReader {
  private readonly globals = new Map<string, Buffer>();

  constructor(
    private readonly src: ByteSource,
    private readonly what: string,
    private readonly applyGlobals: boolean,
  ) {}

  private truncated(offset: number): BuildfleetError {
    return formatError(`${this.what}: truncated tar (input ends inside the header at offset ${offset})`);
  }

  /** Data of a metadata entry (PAX records, GNU long name), with its padding consumed. */
  private async readMeta(size: number, offset: number): Promise<Buffer> {
    if (size > MAX_META) throw formatError(`${this.what}: tar metadata entry at offset ${offset} is ${size} bytes, more than ${MAX_META}`);
    const data = await this.src.readExact(size);
    if (data.length < size || (await this.src.skip(padding(size))) < padding(size)) throw this.truncated(offset);
    return data;
  }

  /** Reads headers up to the next real entry (PAX, GNU long names folded in); null at the end. */
  async next(): Promise<Parsed | null> {
    const what = this.what;
    let local: PaxRecord[] = [];
    let longName: Buffer | undefined;
    let longLink: Buffer | undefined;
    let pending = false;
    let start: number | undefined; // of the first extension header, when there are any
    for (;;) {
      const offset = this.src.position;
      const block = await this.src.readExact(BLOCK);
      if (block.length === 0 && !pending) return null; // EOF after a complete entry: accepted (some layers lack end blocks)
      if (block.length < BLOCK) throw this.truncated(offset);
      if (isZeroBlock(block)) {
        if (pending) throw formatError(`${what}: extended header before offset ${offset} is not followed by an entry`);
        const second = await this.src.readExact(BLOCK);
        if (isZeroBlock(second)) return null;
        throw formatError(`${what}: lone zero block at offset ${offset} inside the tar`);
      }
      if (!checksumMatches(block, what)) throw formatError(`${what}: bad tar header checksum at offset ${offset}`);
      const flag = String.fromCharCode(block[156]!);
      const size = parseNumeric(block.subarray(124, 136), what);
      if (flag === 'x' || flag === 'L' || flag === 'K') start ??= offset;
      if (flag === 'x') {
        local = parsePaxRecords(await this.readMeta(size, offset), what);
        pending = true;
      } else if (flag === 'g') {
        const records = parsePaxRecords(await this.readMeta(size, offset), what);
        for (const [key, value] of records) {
          if (value.length === 0) this.globals.delete(key);
          else if (!key.startsWith('GNU.sparse.')) this.globals.set(key, value);
        }
      } else if (flag === 'L' || flag === 'K') {
        const data = await this.readMeta(size, offset);
        const nul = data.indexOf(0);
        const value = nul < 0 ? data : data.subarray(0, nul);
        if (flag === 'L') longName = value;
        else longLink = value;
        pending = true;
      } else {
        return this.entry(block, flag, size, offset, start ?? offset, local, longName, longLink);
      }
    }
  }

  private async entry(block: Buffer, flag: string, fieldSize: number, offset: number, start: number, local: PaxRecord[], longName?: Buffer, longLink?: Buffer): Promise<Parsed> {
    const what = this.what;
    const magic = block.toString('latin1', 257, 263);
    const ustar = magic === 'ustar\0';
    const gnu = magic === 'ustar ' && block.toString('latin1', 263, 265) === ' \0';
    let nameBytes = fieldBytes(block, 0, 100);
    let star = false;
    if (ustar) {
      star = block.toString('latin1', 508, 512) === 'tar\0';
      const prefix = fieldBytes(block, 345, star ? 131 : 155);
      if (prefix.length > 0) nameBytes = Buffer.concat([prefix, Buffer.from('/'), nameBytes]);
    }
    let name = decodeName(nameBytes);
    let linkname = decodeName(fieldBytes(block, 157, 100));
    const header: TarHeader = {
      path: '',
      type: 'file',
      mode: 0,
      uid: parseNumeric(block.subarray(108, 116), what),
      gid: parseNumeric(block.subarray(116, 124), what),
      size: 0,
      mtime: { sec: parseNumeric(block.subarray(136, 148), what), nsec: 0 },
      xattrs: NO_XATTRS,
    };
    const modeField = parseNumeric(block.subarray(100, 108), what);
    header.mode = modeField % 0o10000;
    if (modeField >= 0o10000) header.modeTypeBits = modeField - header.mode;
    if (ustar || gnu) {
      const uname = fieldBytes(block, 265, 32).toString('utf8');
      const gname = fieldBytes(block, 297, 32).toString('utf8');
      if (uname) header.uname = uname;
      if (gname) header.gname = gname;
    }
    if (gnu && flag !== 'S') {
      if (block[345] !== 0) header.atime = { sec: parseNumeric(block.subarray(345, 357), what), nsec: 0 };
      if (block[357] !== 0) header.ctime = { sec: parseNumeric(block.subarray(357, 369), what), nsec: 0 };
    }

    // PAX records: globals first (when applied), then this entry's own.
    const records: PaxRecord[] = this.applyGlobals ? [...this.globals, ...local] : local;
    let dataSize = fieldSize;
    const libarchive = new Map<string, Buffer>();
    for (const [key, value] of records) {
      const text = () => value.toString('utf8');
      if (value.length === 0 && !key.startsWith('SCHILY.xattr.') && !key.startsWith('LIBARCHIVE.xattr.')) continue;
      if (key === 'path') name = decodeName(value);
      else if (key === 'linkpath') linkname = decodeName(value);
      else if (key === 'size') dataSize = parsePaxInteger(text(), key, what);
      else if (key === 'uid') header.uid = parsePaxInteger(text(), key, what);
      else if (key === 'gid') header.gid = parsePaxInteger(text(), key, what);
      else if (key === 'uname') header.uname = text();
      else if (key === 'gname') header.gname = text();
      else if (key === 'mtime' || key === 'atime' || key === 'ctime') header[key] = parsePaxTime(text(), what);
      else if (key.startsWith('SCHILY.xattr.')) ownXattrs(header).set(key.slice('SCHILY.xattr.'.length), value);
      else if (key.startsWith('LIBARCHIVE.xattr.')) libarchive.set(percentDecode(key.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(value.toString('latin1'), 'base64'));
      else if (!key.startsWith('GNU.sparse.')) (header.paxExtra ??= new Map()).set(key, value);
    }
    for (const [key, value] of libarchive) if (!header.xattrs.has(key)) ownXattrs(header).set(key, value);
    const storedSize = dataSize; // bytes after the header in the archive, sparse map included

    // GNU sparse: old 'S' headers, or PAX GNU.sparse.* records.
    let sparse: { map: SparseMap; realSize: number } | undefined;
    const truncated = () => this.truncated(offset);
    if (flag === 'S') {
      if (!gnu) throw new BuildfleetError('unsupported', `${what}: sparse entry "${name}" at offset ${offset} is not in GNU format`);
      sparse = await readOldGnuSparse(block, this.src, what, truncated);
    } else if (TYPES[flag] === 'file') {
      const pax = paxSparse(local, what);
      if (pax) {
        if (pax.name) name = pax.name;
        if (pax.realSize === undefined) throw formatError(`${what}: GNU sparse entry "${name}" has no real size`);
        if (pax.version === '1') {
          const { map, consumed } = await readSparse1Map(this.src, dataSize, what, truncated);
          sparse = { map, realSize: pax.realSize };
          dataSize -= consumed;
        } else sparse = { map: pax.map ?? [], realSize: pax.realSize };
      }
    }
    if (longName) name = decodeName(longName);
    if (longLink) linkname = decodeName(longLink);

    let type = flag === 'S' ? 'file' : TYPES[flag];
    if (!type) throw new BuildfleetError('unsupported', `${what}: entry "${name}" has unsupported tar type ${JSON.stringify(flag)}`);
    if (flag === '\0' && name.endsWith('/')) type = 'directory';
    header.type = type;

    const path = normaliseEntryPath(name);
    if (path === undefined) throw formatError(`${what}: tar entry "${name}" escapes the root`);
    if (path === '' && type !== 'directory') throw formatError(`${what}: tar entry "${name}" (${type}) has no name`);
    header.path = path;
    if (type === 'hardlink') {
      const target = normaliseEntryPath(linkname);
      if (!target) throw formatError(`${what}: hardlink "${path}" points outside the root ("${linkname}")`);
      header.linkname = target;
    } else if (type === 'symlink') header.linkname = linkname;
    if (type === 'char' || type === 'block') {
      header.devmajor = parseNumeric(block.subarray(329, 337), what);
      header.devminor = parseNumeric(block.subarray(337, 345), what);
    }

    // One POSIX ustar block (not star's variant, which carries times) and nothing before it.
    const plain =
      ustar &&
      !star &&
      block[263] === 0x30 &&
      block[264] === 0x30 &&
      start === offset &&
      !(this.applyGlobals && this.globals.size > 0) &&
      flag >= '0' &&
      flag <= '6' &&
      (flag === '0' || fieldSize === 0) &&
      path === name &&
      (type !== 'hardlink' || header.linkname === linkname);

    // Only regular files carry data (Go archive/tar, hence Docker, ignores the size of the others).
    const padBytes = type === 'file' ? padding(storedSize) : 0;
    if (type !== 'file') return { header, pieces: [], dataBytes: 0, padBytes, start, plain };
    if (sparse) {
      header.size = sparse.realSize;
      return { header, pieces: piecesFromMap(sparse.map, sparse.realSize, dataSize, what), dataBytes: dataSize, padBytes, start, plain };
    }
    header.size = dataSize;
    return { header, pieces: dataSize > 0 ? [{ zero: false, length: dataSize }] : [], dataBytes: dataSize, padBytes, start, plain };
  }
}
