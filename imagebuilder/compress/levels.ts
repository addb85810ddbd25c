import { BuildfleetError } from '../errors.js';
import type { Compression } from '../oci/media-types.js';

/** A layer compression named by the user (`--compression`). */
export function parseCompression(value: string): Compression {
  if (value === 'gzip' || value === 'zstd' || value === 'none') return value;
  throw new BuildfleetError('usage', `--compression must be gzip, zstd or none, got "${value}"`);
}

/** The highest level each compression takes (gzip's zlib and libdeflate 9, the zstd binary 19). */
const maxLevel: Record<Exclude<Compression, 'none'>, number> = { gzip: 9, zstd: 19 };

/** Refuses a `--level` the compression does not take (none takes no level). */
export function checkCompressionLevel(compression: Compression, level: number | undefined): void {
  if (level === undefined) return;
  if (compression === 'none') throw new BuildfleetError('usage', '--level needs --compression gzip or zstd');
  const max = maxLevel[compression];
  if (level > max) throw new BuildfleetError('usage', `--level for ${compression} must be 1 to ${max}, got ${level}`);
}
