import { createWriteStream } from 'node:fs';
import { rename, rm, mkdir } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestStream } from '../oci/digest.js';
import { BuildfleetError } from '../oci/errors.js';

/** A name beside `path` that no reader will take for the real file. */
export function tempPathBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Whether a directory entry is a temp file tempPathBeside made for a file named `base`. */
export function isTempBeside(entry: string, base: string): boolean {
  const prefix = `.${base}.tmp-`;
  return entry.startsWith(prefix) && /^\d+-[0-9a-f]{8}$/.test(entry.slice(prefix.length));
}

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
  }
}
