import { BuildfleetError } from '../../imagebuilder/errors.js';
import { NO_XATTRS, OPAQUE_MARKER, WHITEOUT_PREFIX, baseName, normaliseEntryPath, parentOf, type TarHeader, type TarTime } from '../../imagebuilder/tar/entry.js';
import { BLOCK, checksumMatches, decodeName, encodeName, fieldBytes, isZeroBlock, padding, parseNumeric, parsePaxRecords, parsePaxTime } from '../../imagebuilder/tar/fields.js';
import { encodeHeader } from '../../imagebuilder/tar/writer.js';

/**
 * One pass over a layer's uncompressed tar, as it streams in, that feeds three consumers:
 *
 * - the extractor (GNU tar, writing the layer's overlay2 diff dir): the bytes as they are, except
 *   where Docker's overlay2 applier does something other than a plain extraction: a whiteout
 *   `.wh.NAME` becomes the character device 0:0 NAME, an opaque marker becomes the
 *   `trusted.overlay.opaque=y` xattr on its directory, the root entry's metadata is not applied,
 *   and PAX global headers are dropped (Docker ignores them; GNU tar would apply them);
 * - tar-split: the raw bytes between file contents, and each entry's name, size and CRC-64, from
 *   which Docker rebuilds the exact layer tar for `docker save` and `docker push`;
 * - the layer's facts: its size on disk as Docker's overlay2 counts it.
 *
 * Only the bytes of headers are parsed; contents pass in the chunks they arrived in. Anything the
 * direct path cannot prove it writes exactly as the runtime would (a path leaving the root, an
 * entry below a symlink or file of the same layer, sparse files, unknown entry types) is an
 * UnsupportedLayer: the caller leaves such an image to the runtime's own pull.
 */

export class UnsupportedLayer extends Error {
  override name = 'UnsupportedLayer';
}

export type Crc64 = { update(buffers: Buffer[]): Promise<void>; final(): Buffer };

export type LayerWalkSinks = {
  /** Bytes for the extractor, in order; the walk waits while the promise is pending (backpressure). */
  forward(chunk: Buffer): Promise<void> | void;
  /** Raw bytes between contents (headers, padding, the end blocks and what follows them). */
  segment(raw: Buffer): void;
  /** One per entry, in order: its name as the tar gives it, content size, and content CRC-64 (none when empty). */
  file(name: string, size: number, crc: Buffer | undefined): void;
  /** A fresh CRC-64 for one entry's content. */
  crc64(sizeHint: number): Crc64;
};

export type LayerFacts = {
  entries: number;
  /** What Docker's overlay2 reports as the layer's size: regular files (a hardlinked one once) and symlink targets, in bytes. */
  sizeOnDisk: number;
};

type Meta = { mode: number; uid: number; gid: number; mtime: TarTime; xattrs: Map<string, Buffer> };

const TYPE_DIR = 0x35; // '5'
const SUPPORTED_TYPES = new Set(['0', '\0', '7', '1', '2', '3', '4', '5', '6']);

/** Reads exact byte counts from an async chunk source; hands contents through as they came. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private available = 0;
  private done = false;

  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async fill(bytes: number): Promise<boolean> {
    while (this.available < bytes && !this.done) {
      const next = await this.source.next();
      if (next.done) this.done = true;
      else if (next.value.length > 0) {
        this.chunks.push(next.value);
        this.available += next.value.length;
      }
    }
    return this.available >= bytes;
  }

  /** Exactly `bytes` bytes, or undefined when the input ends first. */
  async take(bytes: number): Promise<Buffer | undefined> {
    if (!(await this.fill(bytes))) return undefined;
    if (this.chunks[0]!.length === bytes) return this.shift(bytes);
    if (this.chunks[0]!.length > bytes) {
      const head = this.chunks[0]!;
      this.chunks[0] = head.subarray(bytes);
      this.available -= bytes;
      return head.subarray(0, bytes);
    }
    const parts: Buffer[] = [];
    let left = bytes;
    while (left > 0) {
      const head = this.chunks[0]!;
      if (head.length <= left) {
        parts.push(this.shift(head.length));
        left -= head.length;
      } else {
        parts.push(head.subarray(0, left));
        this.chunks[0] = head.subarray(left);
        this.available -= left;
        left = 0;
      }
    }
    return Buffer.concat(parts, bytes);
  }

  /** Up to `most` bytes (at least one), as they are buffered; undefined at the end of the input. */
  async some(most: number): Promise<Buffer | undefined> {
    if (!(await this.fill(1))) return undefined;
    const head = this.chunks[0]!;
    if (head.length <= most) return this.shift(head.length);
    this.chunks[0] = head.subarray(most);
    this.available -= most;
    return head.subarray(0, most);
  }

  private shift(length: number): Buffer {
    this.available -= length;
    return this.chunks.shift()!;
  }
}

export async function walkLayer(input: AsyncIterable<Buffer>, sinks: LayerWalkSinks, what: string): Promise<LayerFacts> {
  const bytes = new ByteQueue(input[Symbol.asyncIterator]());
  const unsupported = (why: string) => new UnsupportedLayer(`${what}: ${why}`);
  const truncated = () => new BuildfleetError('format', `${what}: truncated tar`);
  const need = async (n: number) => (await bytes.take(n)) ?? Promise.reject(truncated());

  // Paths this layer made as something other than a directory: nothing may be extracted below them.
  const nonDirs = new Set<string>();
  // Directories this layer made, with what an opaque marker must write back on them.
  const dirs = new Map<string, Meta>();
  // Sizes by path (a later entry of the same path replaces an earlier one); hardlinks add nothing.
  const sizes = new Map<string, number>();
  let entries = 0;
  // Raw bytes since the last content: extension headers, padding. Forwarded with the next header.
  let pendingRaw: Buffer[] = [];
  let pendingForward: Buffer[] = [];
  let pax: Map<string, Buffer> | undefined;
  let gnuName: string | undefined;
  let gnuLink: string | undefined;

  for (;;) {
    const block = await bytes.take(BLOCK);
    if (!block) throw truncated();
    if (isZeroBlock(block)) {
      // The end of the archive: it and whatever follows go to tar-split as they are.
      const rest: Buffer[] = [...pendingRaw, block];
      for (let more = await bytes.some(1 << 20); more; more = await bytes.some(1 << 20)) rest.push(more);
      const trailer = Buffer.concat(rest);
      sinks.segment(trailer);
      await sinks.forward(Buffer.concat([...pendingForward, block, Buffer.alloc(BLOCK)]));
      return { entries, sizeOnDisk: [...sizes.values()].reduce((sum, size) => sum + size, 0) };
    }
    if (!checksumMatches(block, what)) throw new BuildfleetError('format', `${what}: not a tar header (bad checksum) after ${entries} entries`);
    const type = String.fromCharCode(block[156]!);
    const size = parseNumeric(block.subarray(124, 136), what);
    if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
      const data = await need(size + padding(size));
      const raw = Buffer.concat([block, data]);
      pendingRaw.push(raw);
      const content = data.subarray(0, size);
      if (type === 'g') continue; // Docker and containerd ignore PAX global headers; never forwarded
      pendingForward.push(raw);
      if (type === 'x') {
        pax ??= new Map();
        for (const [key, value] of parsePaxRecords(content, what)) pax.set(key, value);
      } else if (type === 'L') gnuName = decodeName(fieldBytes(content, 0, content.length));
      else gnuLink = decodeName(fieldBytes(content, 0, content.length));
      continue;
    }
    if (!SUPPORTED_TYPES.has(type)) throw unsupported(`entry type "${type}" is not one the direct path writes`);
    if (pax && [...pax.keys()].some((key) => key.startsWith('GNU.sparse.'))) throw unsupported('sparse files are left to the runtime');

    const posix = block.toString('latin1', 257, 263) === 'ustar\0';
    const prefix = posix ? fieldBytes(block, 345, 155) : undefined;
    const shortName = fieldBytes(block, 0, 100);
    const rawName =
      pax?.has('path') ? decodeName(pax.get('path')!) : gnuName ?? decodeName(prefix && prefix.length > 0 ? Buffer.concat([prefix, Buffer.from('/'), shortName]) : shortName);
    const contentSize = pax?.has('size') ? Number(pax.get('size')!.toString('latin1')) : size;
    const linkname = pax?.has('linkpath') ? decodeName(pax.get('linkpath')!) : gnuLink ?? decodeName(fieldBytes(block, 157, 100));
    // Docker's applier sets a time before 1970 to 1970 itself; GNU tar would keep it.
    const beforeEpoch = pax?.has('mtime') ? pax.get('mtime')![0] === 0x2d : (block[136]! & 0x80) !== 0 && parseNumeric(block.subarray(136, 148), what) < 0;
    if (beforeEpoch) throw unsupported(`entry "${rawName}" is dated before 1970`);
    const headerRaw = [...pendingRaw, block];
    const forwardRaw = [...pendingForward, block];
    const meta = (): Meta => ({
      mode: parseNumeric(block.subarray(100, 108), what) & 0o7777,
      uid: pax?.has('uid') ? Number(pax.get('uid')!.toString('latin1')) : parseNumeric(block.subarray(108, 116), what),
      gid: pax?.has('gid') ? Number(pax.get('gid')!.toString('latin1')) : parseNumeric(block.subarray(116, 124), what),
      mtime: pax?.has('mtime') ? parsePaxTime(pax.get('mtime')!.toString('latin1'), what) : { sec: parseNumeric(block.subarray(136, 148), what), nsec: 0 },
      xattrs: xattrsOf(pax),
    });
    pendingRaw = [];
    pendingForward = [];
    pax = undefined;
    gnuName = undefined;
    gnuLink = undefined;
    entries++;

    const path = normaliseEntryPath(rawName);
    if (path === undefined) throw unsupported(`entry "${rawName}" leaves the layer's root`);
    for (let parent = parentOf(path); parent !== ''; parent = parentOf(parent)) {
      if (nonDirs.has(parent)) throw unsupported(`entry "${rawName}" lies below "${parent}", which the same layer made a non-directory`);
    }
    const isDir = block[156] === TYPE_DIR;
    sinks.segment(Buffer.concat(headerRaw));
    const base = baseName(path);

    if (path === '') {
      // Docker's applier skips the root entry's metadata (the diff dir keeps its own).
      if (!isDir || contentSize !== 0) throw unsupported('a root entry that is not a directory');
      sinks.file(rawName, 0, undefined);
      continue;
    }
    if (base === OPAQUE_MARKER) {
      const dir = parentOf(path);
      const known = dirs.get(dir);
      const now = Math.floor(Date.now() / 1000);
      const header: TarHeader = {
        path: dir,
        type: 'directory',
        size: 0,
        ...(known ?? { mode: 0o755, uid: 0, gid: 0, mtime: { sec: now, nsec: 0 }, xattrs: NO_XATTRS }),
        xattrs: new Map([...(known?.xattrs ?? []), ['trusted.overlay.opaque', Buffer.from('y')]]),
      };
      if (dir === '') throw unsupported('an opaque marker at the root of the layer');
      await sinks.forward(encodeHeader(header));
      await passContent(contentSize, false);
      sinks.file(rawName, contentSize, undefined);
      continue;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const hidden = `${parentOf(path) ? `${parentOf(path)}/` : ''}${base.slice(WHITEOUT_PREFIX.length)}`;
      const { uid, gid, mtime } = meta();
      await sinks.forward(encodeHeader({ path: hidden, type: 'char', mode: 0, uid, gid, size: 0, mtime, devmajor: 0, devminor: 0, xattrs: NO_XATTRS }));
      nonDirs.add(hidden);
      sizes.delete(hidden);
      await passContent(contentSize, false);
      sinks.file(rawName, contentSize, undefined);
      continue;
    }

    await sinks.forward(Buffer.concat(forwardRaw));
    if (isDir) {
      nonDirs.delete(path);
      dirs.set(path, meta());
      sizes.delete(path);
    } else {
      nonDirs.add(path);
      dirs.delete(path);
      if (type === '1') {
        const target = normaliseEntryPath(linkname);
        if (target === undefined || target === '' || !nonDirs.has(target)) throw unsupported(`hardlink "${rawName}" to "${linkname}", which this layer did not make`);
        sizes.set(path, 0);
      } else if (type === '2') sizes.set(path, encodeName(linkname).length);
      else if (type === '0' || type === '\0' || type === '7') sizes.set(path, contentSize);
      else sizes.set(path, 0);
    }
    const crc = await passContent(contentSize, contentSize > 0);
    sinks.file(rawName, contentSize, crc);
  }

  /** Forwards an entry's content (CRC-64 over it when asked), then its padding; the padding starts the next raw segment. */
  async function passContent(contentSize: number, withCrc: boolean): Promise<Buffer | undefined> {
    const hasher = withCrc ? sinks.crc64(contentSize) : undefined;
    let left = contentSize;
    while (left > 0) {
      const chunk = await bytes.some(Math.min(left, 1 << 20));
      if (!chunk) throw truncated();
      left -= chunk.length;
      await Promise.all([hasher?.update([chunk]), sinks.forward(chunk)]);
    }
    const pad = padding(contentSize);
    if (pad > 0) {
      const padBytes = await need(pad);
      pendingRaw.push(padBytes);
      // Forwarded now: the next entry's headers may be replaced, its padding must stay.
      await sinks.forward(padBytes);
    }
    return hasher?.final();
  }
}

function xattrsOf(pax: Map<string, Buffer> | undefined): Map<string, Buffer> {
  if (!pax) return NO_XATTRS;
  let xattrs: Map<string, Buffer> | undefined;
  for (const [key, value] of pax) {
    if (key.startsWith('SCHILY.xattr.')) (xattrs ??= new Map()).set(key.slice('SCHILY.xattr.'.length), value);
  }
  return xattrs ?? NO_XATTRS;
}
