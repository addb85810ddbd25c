import { createWriteStream } from 'node:fs';
import { rename, rm, mkdir } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestStream } from '../oci/digest.js';
import { BuildfleetError } from '../errors.js';
import { ownedTempName, parseTempName, trackTemp, untrackTemp } from './temp-files.js';

/**
 * A name beside `path` that no reader will take for the real file (`.NAME.tmp-OWNER`), removed at
 * exit until untrackTemp(): call it once the temp is renamed into place or removed.
 */
export function tempPathBeside(path: string): string {
  const temp = join(dirname(path), ownedTempName(`.${basename(path)}.tmp-`));
  trackTemp(temp);
  return temp;
}

/** Whether a directory entry is a temp file tempPathBeside made for a file named `base`. */
export function isTempBeside(entry: string, base: string): boolean {
  return parseTempName(entry)?.prefix === `.${base}.tmp-`;
}

/** The prefixes tempPathBeside gives (`.NAME.tmp-`), for sweepDeadOwners. */
export const isTempBesidePrefix = (prefix: string): boolean => /^\..+\.tmp-$/.test(prefix);

/**
 * Streams `source` into `path` atomically: bytes go to a temp file beside it, are hashed on the
 * way, checked against `expected` when given, and only then renamed into place. On any failure
 * the temp file is removed and `path` is untouched.
 */
export async function writeFileAtomically(
  source: Readable,
  path: string,
  expected: { digest?: string; size?: number; what?: string } = {},
): Promise<{ digest: string; size: number }> {
  await mkdir(dirname(path), { recursive: true });
  const temp = tempPathBeside(path);
  const hasher = new DigestStream();
  try {
    await pipeline(source, hasher, createWriteStream(temp, { flags: 'wx' }));
    const what = expected.what ?? basename(path);
    if (expected.size !== undefined && hasher.size !== expected.size) {
      throw new BuildfleetError('integrity', `${what}: got ${hasher.size} bytes, expected ${expected.size}`);
    }
    if (expected.digest !== undefined && hasher.digest !== expected.digest) {
      throw new BuildfleetError('integrity', `${what}: content digest ${hasher.digest} does not match ${expected.digest}`);
    }
    await rename(temp, path);
    return { digest: hasher.digest, size: hasher.size };
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  } finally {
    untrackTemp(temp);
  }
}
