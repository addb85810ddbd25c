import { BuildfleetError } from '../errors.js';
import { BLOCK, decodeName, parseNumeric, parsePaxInteger, type PaxRecord } from './fields.js';
import type { ByteSource } from './source.js';

/**
 * GNU sparse files, delivered dense: the archive holds only the data extents; a map says where
 * they go. Old GNU ('S' headers with in-header and extension-block maps), PAX 0.0 (repeated
 * GNU.sparse.offset/numbytes), 0.1 (GNU.sparse.map) and 1.0 (map at the start of the data).
 */

/** A run of body bytes: `zero` ones are holes, the others come from the archive. */
export type Piece = { zero: boolean; length: number };
export type SparseMap = Array<{ offset: number; length: number }>;

/** At most this many extents per file, so a hostile map cannot exhaust memory. */
const MAX_EXTENTS = 1 << 20;

function bad(what: string, why: string): BuildfleetError {
  return new BuildfleetError('format', `${what}: bad GNU sparse map (${why})`);
}

/** Holes and data runs for a map; the data runs must fit in the `archived` bytes. */
export function piecesFromMap(map: SparseMap, realSize: number, archived: number, what: string): Piece[] {
  const pieces: Piece[] = [];
  let cursor = 0;
  let data = 0;
  for (const { offset, length } of map) {
    if (offset < cursor || offset + length > realSize) throw bad(what, `extent ${offset}+${length} out of order or past ${realSize}`);
    if (offset > cursor) pieces.push({ zero: true, length: offset - cursor });
    if (length > 0) pieces.push({ zero: false, length });
    cursor = offset + length;
    data += length;
  }
  if (data > archived) throw bad(what, `extents hold ${data} bytes, the archive ${archived}`);
  if (realSize > cursor) pieces.push({ zero: true, length: realSize - cursor });
  return pieces;
}

function readEntries(block: Buffer, start: number, count: number, map: SparseMap, what: string): void {
  for (let i = 0; i < count; i++) {
    const at = start + i * 24;
    if (block[at] === 0) break;
    map.push({ offset: parseNumeric(block.subarray(at, at + 12), what), length: parseNumeric(block.subarray(at + 12, at + 24), what) });
  }
}

/** Old GNU 'S' header: 4 extents in the header, 21 per extension block while isextended is set. */
export async function readOldGnuSparse(block: Buffer, src: ByteSource, what: string, truncated: () => Error): Promise<{ map: SparseMap; realSize: number }> {
  const map: SparseMap = [];
  readEntries(block, 386, 4, map, what);
  let extended = block[482] !== 0;
  while (extended) {
    const ext = await src.readExact(BLOCK);
    if (ext.length < BLOCK) throw truncated();
    readEntries(ext, 0, 21, map, what);
    if (map.length > MAX_EXTENTS) throw bad(what, 'too many extents');
    extended = ext[504] !== 0;
  }
  return { map, realSize: parseNumeric(block.subarray(483, 495), what) };
}

export type PaxSparse = { version: '0' | '1'; realSize?: number; name?: string; map?: SparseMap };

/** Sparse information in a PAX record list, or undefined when the entry is not a GNU sparse file. */
export function paxSparse(records: PaxRecord[], what: string): PaxSparse | undefined {
  const values = new Map<string, string>();
  const pairs: number[] = [];
  for (const [key, value] of records) {
    if (!key.startsWith('GNU.sparse.')) continue;
    // The name is bytes like every other name; the rest is ASCII numbers.
    const text = key === 'GNU.sparse.name' ? decodeName(value) : value.toString('utf8');
    if (key === 'GNU.sparse.offset' || key === 'GNU.sparse.numbytes') {
      const expectOffset = pairs.length % 2 === 0;
      if (expectOffset !== (key === 'GNU.sparse.offset')) throw bad(what, 'offset and numbytes out of step');
      pairs.push(parsePaxInteger(text, key, what));
    } else values.set(key, text);
  }
  const major = values.get('GNU.sparse.major');
  const minor = values.get('GNU.sparse.minor');
  let version: '0' | '1';
  if (major === '1' && minor === '0') version = '1';
  else if (major === '0' && (minor === '0' || minor === '1')) version = '0';
  else if (major !== undefined || minor !== undefined) throw new BuildfleetError('unsupported', `${what}: GNU sparse format ${major}.${minor}`);
  else if (values.has('GNU.sparse.map') || pairs.length > 0) version = '0';
  else return undefined;
  const sizeText = values.get('GNU.sparse.size') ?? values.get('GNU.sparse.realsize');
  const result: PaxSparse = { version };
  if (sizeText !== undefined) result.realSize = parsePaxInteger(sizeText, 'GNU.sparse.size', what);
  const name = values.get('GNU.sparse.name');
  if (name) result.name = name;
  if (version === '0') {
    const mapText = values.get('GNU.sparse.map');
    const numbers = mapText !== undefined ? (mapText === '' ? [] : mapText.split(',').map((n) => parsePaxInteger(n, 'GNU.sparse.map', what))) : pairs;
    if (numbers.length % 2 !== 0) throw bad(what, 'odd number of values');
    if (numbers.length / 2 > MAX_EXTENTS) throw bad(what, 'too many extents');
    result.map = [];
    for (let i = 0; i < numbers.length; i += 2) result.map.push({ offset: numbers[i]!, length: numbers[i + 1]! });
  }
  return result;
}

/** Sparse 1.0: decimal numbers, one a line (count, then offset/length pairs), padded to a block. */
export async function readSparse1Map(src: ByteSource, archived: number, what: string, truncated: () => Error): Promise<{ map: SparseMap; consumed: number }> {
  const numbers: number[] = [];
  let partial = '';
  let consumed = 0;
  let wanted = 1;
  while (numbers.length < wanted) {
    if (consumed + BLOCK > archived) throw bad(what, 'map runs past the data');
    const block = await src.readExact(BLOCK);
    if (block.length < BLOCK) throw truncated();
    consumed += BLOCK;
    const lines = (partial + block.toString('latin1')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (numbers.length >= wanted) break;
      numbers.push(parsePaxInteger(line, 'GNU sparse 1.0 map', what));
      if (numbers.length === 1) {
        if (numbers[0]! > MAX_EXTENTS) throw bad(what, 'too many extents');
        wanted = 1 + 2 * numbers[0]!;
      }
    }
    if (numbers.length < wanted && partial.length > 40) throw bad(what, 'number too long');
  }
  const map: SparseMap = [];
  for (let i = 1; i < numbers.length; i += 2) map.push({ offset: numbers[i]!, length: numbers[i + 1]! });
  return { map, consumed };
}
