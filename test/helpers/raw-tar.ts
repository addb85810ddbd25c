import { BLOCK, formatNumeric, setChecksum } from '../../imagebuilder/tar/fields.js';

/**
 * Tar blocks by hand, for bytes no tar writer here produces (PAX global headers, GNU L/K
 * headers, legacy '\0' types, base-256 sizes, trailing bytes): the tar-split tests
 * (nodepool/prepull) feed them to the raw walker and to Docker.
 */
export type RawHeaderOptions = {
  /** ustar prefix (155 bytes). */
  prefix?: string;
  linkname?: string | Buffer;
  /** 'gnu' writes GNU magic ("ustar  \0"), 'v7' none. */
  format?: 'ustar' | 'gnu' | 'v7';
  /** Writes the size as base-256 even when octal would do. */
  base256Size?: boolean;
};

export function rawHeader(name: string | Buffer, type: string, size: number, options: RawHeaderOptions = {}): Buffer {
  const block = Buffer.alloc(BLOCK);
  Buffer.from(name).copy(block, 0, 0, 100);
  formatNumeric(block, 100, 8, type === '5' || type === '\0' ? 0o755 : 0o644);
  formatNumeric(block, 108, 8, 0);
  formatNumeric(block, 116, 8, 0);
  if (options.base256Size) {
    block.fill(0, 124, 136);
    block.writeUIntBE(size, 130, 6);
    block[124] = 0x80;
  } else formatNumeric(block, 124, 12, size);
  formatNumeric(block, 136, 12, 1_700_000_000);
  block.write(type, 156, 1, 'latin1');
  if (options.linkname !== undefined) Buffer.from(options.linkname).copy(block, 157, 0, 100);
  const format = options.format ?? 'ustar';
  if (format === 'ustar') block.write('ustar\u000000', 257, 8, 'latin1');
  if (format === 'gnu') block.write('ustar  \u0000', 257, 8, 'latin1');
  if (options.prefix) block.write(options.prefix, 345, 155, 'utf8');
  setChecksum(block);
  return block;
}

/** Data padded to whole blocks. */
export function padded(data: Buffer | string): Buffer {
  const bytes = Buffer.from(data);
  return Buffer.concat([bytes, Buffer.alloc((BLOCK - (bytes.length % BLOCK)) % BLOCK)]);
}

export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
