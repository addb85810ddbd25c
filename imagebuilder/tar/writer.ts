import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { BuildfleetError } from '../errors.js';
import { normaliseEntryPath, type TarEntryType, type TarHeader, type TarTime } from './entry.js';
import {
  BLOCK,
  ZERO_BLOCK,
  encodeName,
  encodePaxRecord,
  formatNumeric,
  formatPaxTime,
  isAscii,
  octalMax,
  padding,
  setChecksum,
  toAscii,
} from './fields.js';

/**
 * Deterministic tar writer: ustar headers as Go archive/tar (hence Docker) writes them, and a
 * PAX 'x' record before an entry only when ustar cannot hold it (long or non-ASCII names, big
 * ids or sizes, sub-second or negative times, atime/ctime, long owner names, xattrs, extra
 * records). Same headers and bodies in, same bytes out.
 */

const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
};

/** Keys the writer produces itself; paxExtra cannot override them. */
const RESERVED = new Set(['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'mtime', 'atime', 'ctime']);

function writeString(block: Buffer, offset: number, length: number, text: string): void {
  if (text !== '') block.write(text, offset, length, 'utf8');
}

const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');

/** Go's best effort for ustar text fields: ASCII only, cut to the field (most names fit as they are). */
function truncate(text: string, bytes: number): string {
  if (text.length <= bytes && isAscii(text)) return text;
  return Buffer.from(toAscii(text), 'latin1').subarray(0, bytes).toString('latin1');
}

/** Go's splitUSTARPath: a name over 100 bytes may go as prefix (<= 155) + "/" + name (<= 100). */
function splitUstar(name: string): { prefix: string; name: string } | undefined {
  if (!isAscii(name)) return undefined;
  if (name.length <= 100) return { prefix: '', name };
  let length = name.length;
  if (length > 156) length = 156;
  else if (name[length - 1] === '/') length--;
  const slash = name.lastIndexOf('/', length - 1);
  const rest = name.length - slash - 1;
  if (slash <= 0 || rest > 100 || rest === 0 || slash > 155) return undefined;
  return { prefix: name.slice(0, slash), name: name.slice(slash + 1) };
}

/** A ustar header block with everything but the checksum; fields that do not fit are left to PAX. */
function ustarBlock(name: string, flag: string, fields: { mode: number; uid: number; gid: number; size: number; mtime: number; linkname?: string; uname?: string; gname?: string; devmajor?: number; devminor?: number; prefix?: string }): Buffer {
  // From the shared pool, not a new ArrayBuffer per header; zeroed, as every unset field must be.
  const block = Buffer.allocUnsafe(BLOCK).fill(0);
  writeString(block, 0, 100, name);
  formatNumeric(block, 100, 8, fields.mode);
  formatNumeric(block, 108, 8, fields.uid);
  formatNumeric(block, 116, 8, fields.gid);
  formatNumeric(block, 124, 12, fields.size);
  formatNumeric(block, 136, 12, fields.mtime);
  block.write(flag, 156, 1, 'latin1');
  writeString(block, 157, 100, fields.linkname ?? '');
  USTAR_MAGIC.copy(block, 257);
  writeString(block, 265, 32, fields.uname ?? '');
  writeString(block, 297, 32, fields.gname ?? '');
  formatNumeric(block, 329, 8, fields.devmajor ?? 0);
  formatNumeric(block, 337, 8, fields.devminor ?? 0);
  writeString(block, 345, 155, fields.prefix ?? '');
  setChecksum(block);
  return block;
}

/** Go archive/tar's name for the PAX header of NAME: "DIR/PaxHeaders.0/FILE", ASCII, <= 100 bytes. */
function paxHeaderName(name: string): string {
  const slash = name.lastIndexOf('/');
  const joined = posix.join(name.slice(0, slash + 1) || '.', 'PaxHeaders.0', name.slice(slash + 1));
  return Buffer.from(toAscii(joined), 'latin1').subarray(0, 100).toString('latin1').replace(/\/+$/, '');
}

/** Header blocks (PAX record entry if needed, then ustar) for one entry. */
export function encodeHeader(header: TarHeader): Buffer {
  const bad = (why: string) => new BuildfleetError('format', `tar writer: entry "${header.path}": ${why}`);
  const path = normaliseEntryPath(header.path);
  if (path === undefined) throw bad('path escapes the root');
  if (path === '' && header.type !== 'directory') throw bad('empty path');
  if (header.type !== 'file' && header.size !== 0) throw bad(`a ${header.type} has size ${header.size}`);
  const checkInt = (value: number, field: string) => {
    if (!Number.isSafeInteger(value) || value < 0) throw bad(`invalid ${field} ${value}`);
  };
  checkInt(header.uid, 'uid');
  checkInt(header.gid, 'gid');
  checkInt(header.size, 'size');
  checkInt(header.mode, 'mode');

  // Most entries need no PAX record: the map is made only for one that does.
  let records: Map<string, Buffer> | undefined;
  const pax = {
    set: (key: string, value: Buffer) => void (records ??= new Map()).set(key, value),
    has: (key: string) => records?.has(key) === true,
  };
  const name = path === '' ? './' : header.type === 'directory' ? `${path}/` : path;
  const split = splitUstar(name);
  if (!split) pax.set('path', encodeName(name));

  let linkname = header.linkname ?? '';
  if (header.type === 'hardlink') {
    const target = normaliseEntryPath(linkname);
    if (!target) throw bad(`hardlink target "${linkname}" is not inside the root`);
    linkname = target;
  } else if (header.type !== 'symlink') linkname = '';
  if (linkname.length > 100 || !isAscii(linkname)) pax.set('linkpath', encodeName(linkname));

  if (header.uid > octalMax(8)) pax.set('uid', Buffer.from(String(header.uid)));
  if (header.gid > octalMax(8)) pax.set('gid', Buffer.from(String(header.gid)));
  if (header.size > octalMax(12)) pax.set('size', Buffer.from(String(header.size)));
  for (const key of ['uname', 'gname'] as const) {
    const value = header[key] ?? '';
    if (value !== '' && (Buffer.byteLength(value) > 32 || !isAscii(value))) pax.set(key, Buffer.from(value, 'utf8'));
  }

  const { mtime, atime, ctime } = header;
  const checkTime = (time: TarTime | undefined) => {
    if (time && (!Number.isSafeInteger(time.sec) || !Number.isInteger(time.nsec) || time.nsec < 0 || time.nsec >= 1e9)) throw bad(`invalid time ${JSON.stringify(time)}`);
  };
  checkTime(mtime);
  checkTime(atime);
  checkTime(ctime);
  if (mtime.nsec !== 0 || mtime.sec < 0 || mtime.sec > octalMax(12) || atime || ctime) pax.set('mtime', Buffer.from(formatPaxTime(mtime)));
  if (atime) pax.set('atime', Buffer.from(formatPaxTime(atime)));
  if (ctime) pax.set('ctime', Buffer.from(formatPaxTime(ctime)));

  for (const [key, value] of header.xattrs) {
    if (key === '' || key.includes('=') || key.includes('\0')) throw bad(`invalid xattr name ${JSON.stringify(key)}`);
    pax.set(`SCHILY.xattr.${key}`, value);
  }
  for (const [key, value] of header.paxExtra ?? []) {
    if (RESERVED.has(key) || key.startsWith('SCHILY.xattr.') || key.startsWith('GNU.sparse.') || pax.has(key)) continue;
    if (key === '' || key.includes('=')) throw bad(`invalid PAX key ${JSON.stringify(key)}`);
    pax.set(key, value);
  }

  const device = header.type === 'char' || header.type === 'block';
  const block = ustarBlock(split ? split.name : truncate(name, 100), TYPEFLAG[header.type], {
    mode: (header.mode & 0o7777) + (header.modeTypeBits !== undefined && header.modeTypeBits % 0o10000 === 0 && header.modeTypeBits <= 0o7770000 ? header.modeTypeBits : 0),
    uid: header.uid,
    gid: header.gid,
    size: header.size,
    mtime: Math.min(Math.max(mtime.sec, 0), octalMax(12)),
    linkname: truncate(linkname, 100),
    uname: truncate(header.uname ?? '', 32),
    gname: truncate(header.gname ?? '', 32),
    devmajor: device ? (header.devmajor ?? 0) : 0,
    devminor: device ? (header.devminor ?? 0) : 0,
    prefix: split?.prefix ?? '',
  });
  if (records === undefined) return block;

  // Records sorted by key bytes (as Go does), so the output does not depend on Map order.
  const all = records;
  const keys = [...all.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const data = Buffer.concat(keys.map((key) => encodePaxRecord(key, all.get(key)!)));
  const paxBlock = ustarBlock(paxHeaderName(name), 'x', { mode: 0, uid: 0, gid: 0, size: data.length, mtime: 0 });
  return Buffer.concat([paxBlock, data, Buffer.alloc(padding(data.length)), block]);
}

const STAGE = 64 << 10;

export class TarWriter {
  /** The archive bytes; read it (or pipe it) while adding entries, or `add` waits. */
  readonly stream: Readable;
  private wake: (() => void) | undefined;
  private queue: Promise<void> = Promise.resolve();
  private finished = false;
  private staged: Buffer[] = [];
  private stagedBytes = 0;

  constructor(options: { highWaterMark?: number } = {}) {
    this.stream = new Readable({
      highWaterMark: options.highWaterMark ?? 1 << 20,
      read: () => this.resume(),
      destroy: (err, callback) => {
        this.resume();
        callback(err);
      },
    });
  }

  private resume(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private checkOpen(): void {
    if (this.stream.destroyed) throw (this.stream.errored as Error | null) ?? new Error('tar writer: output stream was closed');
  }

  private async push(chunk: Buffer): Promise<void> {
    this.checkOpen();
    if (!this.stream.push(chunk)) {
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.checkOpen();
    }
  }

  /**
   * Small pieces (headers, padding, small files) are gathered into chunks of STAGE bytes: every
   * chunk costs each stream after this one (hashing, compression) a call, whatever its size.
   */
  private async write(chunk: Buffer): Promise<void> {
    this.checkOpen();
    if (chunk.length >= STAGE) {
      await this.flushStaged();
      await this.push(chunk);
      return;
    }
    this.staged.push(chunk);
    this.stagedBytes += chunk.length;
    if (this.stagedBytes >= STAGE) await this.flushStaged();
  }

  private async flushStaged(): Promise<void> {
    if (this.stagedBytes === 0) return;
    const data = this.staged.length === 1 ? this.staged[0]! : Buffer.concat(this.staged, this.stagedBytes);
    this.staged = [];
    this.stagedBytes = 0;
    await this.push(data);
  }

  /** Calls run one after another, in call order. */
  private serial(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => {});
    return run;
  }

  /** Appends an entry; `body` (files only) must hold exactly header.size bytes. */
  add(header: TarHeader, body?: Readable | Buffer): Promise<void> {
    return this.serial(async () => {
      if (this.finished) throw new Error('tar writer: add after finish');
      if (body && header.type !== 'file') throw new BuildfleetError('format', `tar writer: entry "${header.path}" is a ${header.type} and cannot have a body`);
      const encoded = encodeHeader(header);
      let written = 0;
      const mismatch = (count: string) => new BuildfleetError('integrity', `tar writer: entry "${header.path}" has ${count} bytes of content, its header says ${header.size}`);
      if (Buffer.isBuffer(body)) {
        if (body.length !== header.size) throw this.fail(mismatch(String(body.length)));
        await this.write(encoded);
        if (body.length > 0) await this.write(body);
        written = body.length;
      } else {
        await this.write(encoded);
        if (body) {
          for await (const chunk of body as AsyncIterable<Buffer | string>) {
            const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
            written += bytes.length;
            if (written > header.size) throw this.fail(mismatch(`more than ${header.size}`));
            if (bytes.length > 0) await this.write(bytes);
          }
        }
      }
      if (written !== header.size) throw this.fail(mismatch(String(written)));
      const pad = padding(header.size);
      if (pad > 0) await this.write(ZERO_BLOCK.subarray(0, pad));
    });
  }

  /**
   * Appends bytes that already are whole entries (header blocks, data, padding) as another
   * archive holds them; a run of entries may come in as many pieces as it likes, in order.
   */
  addRaw(bytes: Buffer): Promise<void> {
    return this.serial(async () => {
      if (this.finished) throw new Error('tar writer: add after finish');
      await this.write(bytes);
    });
  }

  /** A wrong body leaves a broken archive behind: nobody may use it. */
  private fail(err: Error): Error {
    // Without listeners an 'error' event would crash the process; the caller gets `err` anyway.
    if (!this.stream.destroyed) this.stream.destroy(this.stream.listenerCount('error') > 0 ? err : undefined);
    return err;
  }

  /** Writes the two zero blocks that end the archive and ends the stream. */
  finish(): Promise<void> {
    return this.serial(async () => {
      if (this.finished) return;
      this.finished = true;
      await this.write(Buffer.alloc(2 * BLOCK));
      await this.flushStaged();
      this.stream.push(null);
    });
  }
}
