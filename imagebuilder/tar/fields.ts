import { BuildfleetError } from '../errors.js';
import type { TarTime } from './entry.js';

/**
 * Byte-level pieces of the tar format shared by the reader and the writer: numeric fields
 * (octal and base-256), strings, checksums, PAX records (binary-safe) and PAX times.
 */

export const BLOCK = 512;
export const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** Bytes of padding after `size` bytes of data, up to the next block boundary. */
export function padding(size: number): number {
  const rest = size % BLOCK;
  return rest === 0 ? 0 : BLOCK - rest;
}

export function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function toSafe(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new BuildfleetError('unsupported', `${what}: numeric tar field ${value} is too large`);
  }
  return Number(value);
}

/** An octal field (NUL- or space-padded) or a base-256 one (GNU/star: high bit set, two's complement). */
export function parseNumeric(field: Buffer, what: string): number {
  const first = field[0] ?? 0;
  if (first & 0x80) {
    const negative = (first & 0x40) !== 0;
    const inv = negative ? 0xff : 0;
    let value = 0n;
    for (let i = 0; i < field.length; i++) {
      let byte = (field[i]! ^ inv) & 0xff;
      if (i === 0) byte &= 0x7f;
      value = (value << 8n) | BigInt(byte);
    }
    return toSafe(negative ? -value - 1n : value, what);
  }
  let start = 0;
  let end = field.length;
  while (start < end && (field[start] === 0x20 || field[start] === 0)) start++;
  while (end > start && (field[end - 1] === 0x20 || field[end - 1] === 0)) end--;
  // Every header has several of these: digits are summed directly, no string or BigInt (17
  // octal digits stay below 2^53; longer fields take the exact path).
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = field[i]! - 0x30;
    if (digit < 0 || digit > 7) throw new BuildfleetError('format', `${what}: invalid numeric tar field ${JSON.stringify(field.toString('latin1', start, end))}`);
    value = value * 8 + digit;
  }
  return end - start <= 17 ? value : toSafe(BigInt(`0o${field.toString('latin1', start, end)}`), what);
}

/** Writes `value` as zero-padded octal + NUL when it fits, else as base-256 (as GNU tar and Go do). */
export function formatNumeric(block: Buffer, offset: number, length: number, value: number): void {
  if (Number.isInteger(value) && value >= 0 && value < 8 ** (length - 1)) {
    // Digit by digit into the block: no string per field (several fields per header).
    let rest = value;
    for (let i = offset + length - 2; i >= offset; i--) {
      block[i] = 0x30 + (rest % 8);
      rest = Math.floor(rest / 8);
    }
    block[offset + length - 1] = 0;
    return;
  }
  let x = BigInt(Math.trunc(value));
  for (let i = length - 1; i >= 0; i--) {
    block[offset + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  block[offset] = block[offset]! | 0x80;
}

/** Largest value an octal field of `length` bytes (with its NUL) can hold. */
export function octalMax(length: number): number {
  return 8 ** (length - 1) - 1;
}

/** The bytes of a field up to its first NUL. */
export function fieldBytes(block: Buffer, offset: number, length: number): Buffer {
  const field = block.subarray(offset, offset + length);
  const nul = field.indexOf(0);
  return nul < 0 ? field : field.subarray(0, nul);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A name's bytes as a string, losslessly: on Linux a name is bytes, not text. Valid UTF-8 (nearly
 * every name) decodes as it is, on the fast path; each byte that is not part of a valid UTF-8
 * sequence becomes the lone surrogate U+DC00 + byte (Python's surrogateescape). Valid UTF-8
 * never decodes to a lone surrogate, so different bytes always give different strings, and
 * `encodeName` gives the bytes back.
 */
export function decodeName(bytes: Buffer): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return decodeEscaped(bytes);
  }
}

function decodeEscaped(bytes: Buffer): string {
  let out = '';
  let run = 0; // start of the current run of valid sequences
  let i = 0;
  while (i < bytes.length) {
    const length = utf8SequenceLength(bytes, i);
    if (length > 0) {
      i += length;
      continue;
    }
    out += bytes.toString('utf8', run, i) + String.fromCharCode(0xdc00 + bytes[i]!);
    run = ++i;
  }
  return out + bytes.toString('utf8', run, i);
}

/** Length of the well-formed UTF-8 sequence at `i` (Unicode table 3-7), 0 when there is none. */
function utf8SequenceLength(bytes: Buffer, i: number): number {
  const lead = bytes[i]!;
  if (lead < 0x80) return 1;
  const cont = (at: number, low = 0x80, high = 0xbf) => {
    const byte = bytes[i + at];
    return byte !== undefined && byte >= low && byte <= high;
  };
  if (lead >= 0xc2 && lead <= 0xdf) return cont(1) ? 2 : 0;
  if (lead >= 0xe0 && lead <= 0xef) {
    const second = lead === 0xe0 ? cont(1, 0xa0) : lead === 0xed ? cont(1, 0x80, 0x9f) : cont(1);
    return second && cont(2) ? 3 : 0;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    const second = lead === 0xf0 ? cont(1, 0x90) : lead === 0xf4 ? cont(1, 0x80, 0x8f) : cont(1);
    return second && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

/** A lone surrogate: only `decodeName` puts them in names (for bytes that are not UTF-8). */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** The bytes of a name `decodeName` made (or any well-formed string, as UTF-8). */
export function encodeName(name: string): Buffer {
  if (!LONE_SURROGATE.test(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let run = 0;
  for (let i = 0; i < name.length; i++) {
    const unit = name.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < name.length && (name.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      i++; // a pair: one code point, UTF-8 like the rest of the run
      continue;
    }
    if (unit < 0xd800 || unit > 0xdfff) continue;
    if (unit < 0xdc80 || unit > 0xdcff) throw new BuildfleetError('format', `tar writer: name ${JSON.stringify(name)} holds a lone surrogate that stands for no byte`);
    parts.push(Buffer.from(name.slice(run, i), 'utf8'), Buffer.of(unit - 0xdc00));
    run = i + 1;
  }
  parts.push(Buffer.from(name.slice(run), 'utf8'));
  return Buffer.concat(parts);
}

export function isAscii(text: string): boolean {
  return /^[\x01-\x7f]*$/.test(text);
}

/** Drops non-ASCII characters and NULs (Go archive/tar's best effort for header names). */
export function toAscii(text: string): string {
  return text.replace(/[^\x01-\x7f]/g, '');
}

/** Checksum with the checksum field counted as spaces; old tars summed signed bytes, accept both. */
export function checksumMatches(block: Buffer, what: string): boolean {
  let stored: number;
  try {
    stored = parseNumeric(block.subarray(148, 156), what);
  } catch {
    return false; // not even a number: not a tar header
  }
  // The checksum field counts as eight spaces. One tight pass over the rest (it runs for every
  // header, twice in a squash); the signed sum, 256 less for every byte above 127, only when the
  // unsigned one does not match.
  let sum = 8 * 0x20;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < BLOCK; i++) sum += block[i]!;
  if (stored === sum) return true;
  let high = 0;
  for (let i = 0; i < 148; i++) high += block[i]! >> 7;
  for (let i = 156; i < BLOCK; i++) high += block[i]! >> 7;
  return stored === sum - 256 * high;
}

/** Fills in the checksum field the way Go archive/tar does: six octal digits, NUL, space. */
export function setChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += block[i]!;
  for (let i = 153; i >= 148; i--) {
    block[i] = 0x30 + (sum & 7);
    sum >>>= 3;
  }
  block[154] = 0;
  block[155] = 0x20;
}

export type PaxRecord = [key: string, value: Buffer];

/** Parses "LEN KEY=VALUE\n" records; LEN counts bytes, values stay binary. Order is kept (GNU sparse 0.0 repeats keys). */
export function parsePaxRecords(data: Buffer, what: string): PaxRecord[] {
  const records: PaxRecord[] = [];
  const bad = (why: string) => new BuildfleetError('format', `${what}: malformed PAX record (${why})`);
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad the record block with NULs
    const space = data.indexOf(0x20, pos);
    if (space < 0) throw bad('no length');
    const lenText = data.toString('latin1', pos, space);
    if (!/^[0-9]+$/.test(lenText)) throw bad(`length ${JSON.stringify(lenText)}`);
    const end = pos + Number(lenText);
    if (end > data.length || end <= space + 1 || data[end - 1] !== 0x0a) throw bad('length does not match');
    const eq = data.indexOf(0x3d, space + 1);
    if (eq < 0 || eq > end - 2) throw bad('no "="');
    const key = data.toString('utf8', space + 1, eq);
    if (key === '') throw bad('empty key');
    records.push([key, Buffer.from(data.subarray(eq + 1, end - 1))]);
    pos = end;
  }
  return records;
}

/** One binary-safe PAX record; the length prefix counts bytes, itself included. */
export function encodePaxRecord(key: string, value: Buffer): Buffer {
  const keyBytes = Buffer.from(key, 'utf8');
  const rest = 1 + keyBytes.length + 1 + value.length + 1;
  let length = rest + 1;
  while (String(length).length + rest !== length) length = String(length).length + rest;
  return Buffer.concat([Buffer.from(`${length} `, 'latin1'), keyBytes, Buffer.from('=', 'latin1'), value, Buffer.from('\n', 'latin1')]);
}

/** "SEC[.FRACTION]" with an optional "-": floor semantics, so nsec is always in [0, 1e9). */
export function parsePaxTime(value: string, what: string): TarTime {
  const match = /^(-?)([0-9]+)(?:\.([0-9]*))?$/.exec(value);
  if (!match) throw new BuildfleetError('format', `${what}: invalid PAX time ${JSON.stringify(value)}`);
  const whole = Number(match[2]);
  if (!Number.isSafeInteger(whole)) throw new BuildfleetError('unsupported', `${what}: PAX time ${value} is out of range`);
  const nsec = Number((match[3] ?? '').slice(0, 9).padEnd(9, '0'));
  if (match[1] !== '-') return { sec: whole, nsec };
  return nsec === 0 ? { sec: whole === 0 ? 0 : -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1e9 - nsec };
}

export function formatPaxTime(time: TarTime): string {
  if (time.nsec === 0) return String(time.sec);
  const negative = time.sec < 0;
  const sec = negative ? -(time.sec + 1) : time.sec;
  const nsec = negative ? 1e9 - time.nsec : time.nsec;
  return `${negative ? '-' : ''}${sec}.${String(nsec).padStart(9, '0').replace(/0+$/, '')}`;
}

/** A non-negative decimal PAX value (size, uid, gid). */
export function parsePaxInteger(value: string, key: string, what: string): number {
  if (!/^[0-9]+$/.test(value)) throw new BuildfleetError('format', `${what}: invalid PAX ${key} ${JSON.stringify(value)}`);
  const number = Number(value);
  if (!Number.isSafeInteger(number)) throw new BuildfleetError('unsupported', `${what}: PAX ${key} ${value} is too large`);
  return number;
}

/** libarchive percent-encodes xattr names in LIBARCHIVE.xattr.NAME keys. */
export function percentDecode(text: string): string {
  if (!text.includes('%')) return text;
  const bytes: number[] = [];
  const raw = Buffer.from(text, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    const hex = raw[i] === 0x25 ? raw.toString('latin1', i + 1, i + 3) : '';
    if (/^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else bytes.push(raw[i]!);
  }
  return Buffer.from(bytes).toString('utf8');
}
