import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { BuildfleetError } from '../errors.js';
import { checksumMatches } from '../tar/fields.js';

/**
 * A random-access index of a tar FILE: one pass over the 512-byte headers (member data is
 * skipped, never read), then any member is read with fs.createReadStream(path, {start, end}).
 * tar-stream only parses a stream front to back, so it cannot find one member of a 4 GB
 * `docker save` without reading everything before it; this reader can.
 *
 * Understands ustar (name + prefix), GNU long names and link names ('L', 'K'), PAX extended
 * headers ('x': path, linkpath, size) and base-256 sizes. Global PAX headers ('g') are skipped.
 */

export type TarMemberType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarMember {
  /** Normalised path: no leading "./" or "/", no trailing "/". */
  name: string;
  type: TarMemberType;
  /** Byte offset of the member's data in the file. */
  offset: number;
  /** Data size in bytes (0 for links and directories). */
  size: number;
  /** Target of a symlink (as written) or of a hardlink (an archive path). */
  linkname?: string;
}

export interface TarIndex {
  path: string;
  /** Members by normalised path; a later member of the same name replaces an earlier one. */
  members: Map<string, TarMember>;
}

const BLOCK = 512;

function truncated(path: string, detail: string): BuildfleetError {
  return new BuildfleetError('format', `${path}: truncated tar archive (${detail})`);
}

function cString(buf: Buffer, start: number, length: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end < 0 || end > start + length ? start + length : end);
}

/** A numeric header field: octal text, or base-256 (GNU / star) when the top bit is set. */
export function parseTarNumber(buf: Buffer, start: number, length: number): number | undefined {
  const first = buf[start]!;
  if (first & 0x80) {
    if (first === 0xff) return undefined; // negative: never a valid size
    let value = first & 0x7f;
    for (let i = 1; i < length; i++) value = value * 256 + buf[start + i]!;
    return Number.isSafeInteger(value) ? value : undefined;
  }
  const text = buf.toString('latin1', start, start + length).replace(/[\0 ]+$/, '').replace(/^[\0 ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) return undefined;
  return parseInt(text, 8);
}

/** PAX records: "LEN KEY=VALUE\n", LEN counting the whole record. */
export function parsePaxRecords(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const length = Number(data.toString('latin1', pos, space));
    if (!Number.isInteger(length) || length <= 0 || pos + length > data.length) break;
    const record = data.subarray(space + 1, pos + length - 1); // without the trailing "\n"
    const eq = record.indexOf(0x3d);
    if (eq > 0) records.set(record.toString('utf8', 0, eq), record.toString('utf8', eq + 1));
    pos += length;
  }
  return records;
}

export function normaliseTarPath(name: string): string {
  let p = posix.normalize(name.replace(/^\/+/, ''));
  if (p === '.' || p === './') return '';
  p = p.replace(/\/+$/, '');
  return p;
}

function typeOf(flag: number): TarMemberType {
  switch (flag) {
    case 0:
    case 0x30: // '0'
    case 0x37: // '7' contiguous
      return 'file';
    case 0x31:
      return 'hardlink';
    case 0x32:
      return 'symlink';
    case 0x35:
      return 'directory';
    default:
      return 'other';
  }
}

async function readExactly(fh: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === length ? buf : buf.subarray(0, done);
}

/** Indexes the tar file at `path`. Fails with a one-line 'format' error on a truncated or corrupt archive. */
export async function indexTar(path: string): Promise<TarIndex> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BuildfleetError('not-found', `${path}: no such file`);
    throw new BuildfleetError('environment', `${path}: cannot open: ${(err as Error).message}`);
  }
  try {
    const fileSize = (await fh.stat()).size;
    const members = new Map<string, TarMember>();
    let pos = 0;
    let longName: string | undefined;
    let longLink: string | undefined;
    let pax: Map<string, string> | undefined;
    if (fileSize === 0) throw new BuildfleetError('format', `${path}: empty file, not a tar archive`);
    for (;;) {
      if (pos + BLOCK > fileSize) {
        throw truncated(path, pos === fileSize ? `no end-of-archive marker after ${pos} bytes` : `partial header at byte ${pos}`);
      }
      const header = await readExactly(fh, BLOCK, pos);
      if (header.length < BLOCK) throw truncated(path, `partial header at byte ${pos}`);
      if (header.every((b) => b === 0)) break; // end of archive (a second zero block may follow)
      if (pos === 0 && header[0] === 0x1f && header[1] === 0x8b) {
        throw new BuildfleetError('format', `${path}: is gzip-compressed; expected an uncompressed tar (gunzip it first)`);
      }
      if (!checksumMatches(header, path)) {
        throw new BuildfleetError('format', `${path}: not a tar archive or corrupt tar header at byte ${pos}`);
      }
      const flag = header[156]!;
      const headerSize = parseTarNumber(header, 124, 12);
      if (headerSize === undefined) throw new BuildfleetError('format', `${path}: invalid size in tar header at byte ${pos}`);
      const paxSize = pax?.get('size');
      const size = paxSize !== undefined && /^\d+$/.test(paxSize) ? Number(paxSize) : headerSize;
      const dataOffset = pos + BLOCK;
      // Links and directories carry no data whatever their size field says (except PAX / GNU meta entries).
      const type = typeOf(flag);
      const isMeta = flag === 0x4c /* L */ || flag === 0x4b /* K */ || flag === 0x78 /* x */ || flag === 0x67; /* g */
      const dataSize = isMeta || type === 'file' || type === 'other' ? size : 0;
      if (dataOffset + dataSize > fileSize) {
        throw truncated(path, `member at byte ${pos} needs ${dataSize} bytes of data, the file ends after ${fileSize - dataOffset}`);
      }
      const next = dataOffset + Math.ceil(dataSize / BLOCK) * BLOCK;

      if (isMeta) {
        if (size > 16 * 1024 * 1024) throw new BuildfleetError('format', `${path}: tar extended header at byte ${pos} is implausibly large (${size} bytes)`);
        const data = size === 0 ? Buffer.alloc(0) : await readExactly(fh, size, dataOffset);
        if (flag === 0x4c) longName = cString(data, 0, data.length);
        else if (flag === 0x4b) longLink = cString(data, 0, data.length);
        else if (flag === 0x78) pax = parsePaxRecords(data);
        // 'g' (global PAX) is skipped: it applies defaults we do not need for member lookup.
        pos = next;
        continue;
      }

      const isUstar = header.toString('latin1', 257, 263) === 'ustar\0';
      let name = cString(header, 0, 100);
      if (isUstar) {
        const prefix = cString(header, 345, 155);
        if (prefix !== '') name = `${prefix}/${name}`;
      }
      name = pax?.get('path') ?? longName ?? name;
      const rawLink = pax?.get('linkpath') ?? longLink ?? cString(header, 157, 100);
      const member: TarMember = { name: normaliseTarPath(name), type, offset: dataOffset, size: dataSize };
      if (type === 'symlink' || type === 'hardlink') member.linkname = rawLink;
      if (member.name !== '') members.set(member.name, member);
      longName = undefined;
      longLink = undefined;
      pax = undefined;
      pos = next;
    }
    return { path, members };
  } finally {
    await fh.close();
  }
}

/**
 * The member that holds the data for `name`, following symlinks (relative to the link's own
 * directory, as `docker save` of newer engines writes `<id>/layer.tar -> ../blobs/sha256/<hex>`)
 * and hardlinks (archive paths). Undefined when a name or a link target is not in the archive.
 */
export function resolveMember(index: TarIndex, name: string): TarMember | undefined {
  let current = index.members.get(normaliseTarPath(name));
  for (let hops = 0; current && hops < 40; hops++) {
    if (current.type === 'symlink') {
      const target = current.linkname ?? '';
      const joined = target.startsWith('/') ? target : posix.join(posix.dirname(current.name), target);
      const normalised = normaliseTarPath(joined);
      if (normalised.startsWith('../') || normalised === '..') return undefined;
      current = index.members.get(normalised);
    } else if (current.type === 'hardlink') {
      current = index.members.get(normaliseTarPath(current.linkname ?? ''));
    } else {
      return current;
    }
  }
  return undefined; // a loop, or a dangling link
}

/** A stream of a member's data bytes (exactly `member.size` of them). */
export function openMemberStream(index: TarIndex, member: TarMember): Readable {
  if (member.size === 0) return Readable.from([]);
  return createReadStream(index.path, { start: member.offset, end: member.offset + member.size - 1 });
}

/** The first `length` bytes of a member (fewer if the member is shorter). */
export async function readMemberHead(index: TarIndex, member: TarMember, length: number): Promise<Buffer> {
  const fh = await open(index.path, 'r');
  try {
    return await readExactly(fh, Math.min(length, member.size), member.offset);
  } finally {
    await fh.close();
  }
}

/** A whole (small) member, e.g. manifest.json or an image config. */
export async function readMember(index: TarIndex, member: TarMember, limit = 64 * 1024 * 1024): Promise<Buffer> {
  if (member.size > limit) {
    throw new BuildfleetError('format', `${index.path}: ${member.name} is ${member.size} bytes, more than the ${limit} expected`);
  }
  const buf = await readMemberHead(index, member, member.size);
  if (buf.length !== member.size) throw truncated(index.path, `${member.name} ends early`);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Writing: the few headers a docker-archive needs (regular files and directories, short names).

function writeOctal(buf: Buffer, value: number, start: number, length: number): void {
  buf.write(value.toString(8).padStart(length - 1, '0') + '\0', start, length, 'latin1');
}

/**
 * A ustar header for a regular file or a directory. Sizes beyond the 8 GiB octal limit are
 * written in base-256, as GNU tar and Go's archive/tar (Docker) read them.
 */
export function encodeTarHeader(entry: { name: string; size: number; type: 'file' | 'directory'; mode?: number; mtime?: number }): Buffer {
  const header = Buffer.alloc(BLOCK);
  const name = entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  if (Buffer.byteLength(name) > 100) throw new Error(`encodeTarHeader: name longer than 100 bytes: ${name}`);
  header.write(name, 0, 100, 'utf8');
  writeOctal(header, entry.mode ?? (entry.type === 'directory' ? 0o755 : 0o644), 100, 8);
  writeOctal(header, 0, 108, 8);
  writeOctal(header, 0, 116, 8);
  const size = entry.type === 'directory' ? 0 : entry.size;
  if (size < 0o77777777777) {
    writeOctal(header, size, 124, 12);
  } else {
    let value = size;
    for (let i = 11; i > 0; i--) {
      header[124 + i] = value % 256;
      value = Math.floor(value / 256);
    }
    header[124] = 0x80;
  }
  writeOctal(header, Math.floor(entry.mtime ?? 0), 136, 12);
  header[156] = entry.type === 'directory' ? 0x35 : 0x30;
  header.write('ustar\0', 257, 6, 'latin1');
  header.write('00', 263, 2, 'latin1');
  header.write('root', 265, 32, 'latin1');
  header.write('root', 297, 32, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += header[i]!;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return header;
}

/** Zero bytes that pad `size` bytes of data to a whole block. */
export function tarPadding(size: number): Buffer {
  const rest = size % BLOCK;
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest);
}

/** The end-of-archive marker: two zero blocks. */
export const tarEnd: Buffer = Buffer.alloc(2 * BLOCK);
