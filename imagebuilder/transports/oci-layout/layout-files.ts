import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import { link, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { digestAlgorithm, digestHex } from '../../oci/digest.js';
import { BuildfleetError, isBuildfleetError } from '../../errors.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../../oci/media-types.js';
import { Descriptor, Index, digestPattern, parseAnyManifest, parseJson } from '../../oci/schemas.js';
import { tempPathBeside } from '../files.js';
import { untrackTemp } from '../temp-files.js';

/**
 * The OCI layout's files on disk, shared by the source, the destination and the lock: names and
 * fixed contents, blob paths, one-line filesystem errors, reading index.json and blobs, and
 * writing small files atomically. See ../oci-layout.ts for the layout itself.
 */

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export const LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
export const LOCK_FILE = 'index.json.lock';
export const LAYOUT_CONTENT = '{"imageLayoutVersion":"1.0.0"}';
export const EMPTY_INDEX = `{"schemaVersion":2,"mediaType":"${MediaType.ociIndex}","manifests":[]}`;
/** Manifests, indexes and configs are read whole: refuse absurd sizes instead of filling memory. */
const MAX_JSON_BLOB = 64 * 1024 * 1024;

const LayoutFile = z.looseObject({ imageLayoutVersion: z.string() });

export function shortDigest(digest: string): string {
  return `${digestAlgorithm(digest)}:${digestHex(digest).slice(0, 12)}`;
}

export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/** One-line errors for filesystem failures; a missing file is 'not-found', the rest is the environment's. */
export function fsError(err: unknown, what: string): BuildfleetError {
  if (isBuildfleetError(err)) return err;
  const code = errnoCode(err);
  if (code === 'ENOENT') return new BuildfleetError('not-found', `${what}: no such file`, { cause: err });
  const reason = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'ENOSPC' ? 'no space left on device' : (err as Error).message;
  return new BuildfleetError('environment', `${what}: ${reason}`, { cause: err });
}

export async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw fsError(err, path);
  }
}

export function blobPathIn(root: string, digest: string): string {
  // The digest pattern keeps the path inside blobs/ (no separators, no "..").
  if (!digestPattern.test(digest)) throw new BuildfleetError('format', `"${digest}" is not a sha256/sha512 digest`);
  return join(root, 'blobs', digestAlgorithm(digest), digestHex(digest));
}

export function refName(entry: Descriptor): string | undefined {
  return entry.annotations?.[REF_NAME_ANNOTATION];
}

/**
 * Creates `path` with `content` only if it does not exist, atomically (a reader never sees a
 * half-written file): write a temp file, then hard-link it into place. False when it existed.
 */
export async function createExclusive(path: string, content: string): Promise<boolean> {
  const temp = tempPathBeside(path);
  await writeFile(temp, content, { flag: 'wx' });
  try {
    await link(temp, path);
    return true;
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EEXIST') return false;
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
      // Filesystems without hard links: exclusive create, not atomic content (tiny files).
      try {
        await writeFile(path, content, { flag: 'wx' });
        return true;
      } catch (err2) {
        if (errnoCode(err2) === 'EEXIST') return false;
        throw err2;
      }
    }
    throw err;
  } finally {
    await rm(temp, { force: true });
    untrackTemp(temp);
  }
}

/** Writes a small file by temp + fsync + rename: readers see the old or the new content, never a mix. */
export async function replaceFileAtomically(path: string, content: string, temps?: Set<string>): Promise<void> {
  const temp = tempPathBeside(path);
  temps?.add(temp);
  try {
    const handle = await open(temp, 'wx');
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  } finally {
    temps?.delete(temp);
    untrackTemp(temp);
  }
}

/** Reads a whole (small) blob and checks its size and digest against the descriptor. */
export async function readVerifiedBlob(root: string, descriptor: Descriptor, what: string): Promise<Buffer> {
  const path = blobPathIn(root, descriptor.digest);
  let bytes: Buffer;
  try {
    const info = await stat(path);
    if (info.size !== descriptor.size) {
      throw new BuildfleetError('integrity', `${what}: blob file has ${info.size} bytes, its descriptor declares ${descriptor.size}`);
    }
    if (info.size > MAX_JSON_BLOB) throw new BuildfleetError('format', `${what}: ${info.size} bytes is too large for a manifest or config`);
    bytes = await readFile(path);
  } catch (err) {
    // index.json or a manifest names it: the layout is incomplete, not the image unknown.
    if (errnoCode(err) === 'ENOENT') throw new BuildfleetError('integrity', `${what}: blob ${descriptor.digest} is missing from the layout (the layout is incomplete)`);
    throw fsError(err, what);
  }
  const algorithm = digestAlgorithm(descriptor.digest);
  const actual = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
  if (actual !== descriptor.digest) {
    throw new BuildfleetError('integrity', `${what}: content digest ${actual} does not match ${descriptor.digest}`);
  }
  return bytes;
}

/** Checks `DIR/oci-layout`; 'absent' when the file is not there. */
export async function checkLayoutFile(root: string, label: string): Promise<'ok' | 'absent'> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(root, LAYOUT_FILE));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 'absent';
    throw fsError(err, `${label}: ${LAYOUT_FILE}`);
  }
  const layout = parseJson(LayoutFile, bytes, `${label}: ${LAYOUT_FILE}`);
  if (!/^1\.\d+\.\d+$/.test(layout.imageLayoutVersion)) {
    throw new BuildfleetError('unsupported', `${label}: image layout version ${layout.imageLayoutVersion} is not supported (expected 1.0.0)`);
  }
  return 'ok';
}

/** index.json parsed (for checks) and raw (edits keep every byte of the entries they do not touch). */
export async function readIndexJson(root: string, label: string): Promise<{ index: Index; raw: Record<string, unknown> } | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(root, INDEX_FILE));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw fsError(err, `${label}: ${INDEX_FILE}`);
  }
  const index = parseJson(Index, bytes, `${label}: ${INDEX_FILE}`);
  return { index, raw: JSON.parse(bytes.toString('utf8')) as Record<string, unknown> };
}

/** Every blob digest reachable from index.json (manifests, nested indexes, configs, layers). */
export async function referencedBlobs(root: string, index: Index): Promise<Set<string>> {
  const seen = new Set<string>();
  const queue: Descriptor[] = [...index.manifests];
  while (queue.length > 0) {
    const descriptor = queue.pop()!;
    if (seen.has(descriptor.digest)) continue;
    seen.add(descriptor.digest);
    const maybeManifest = isManifestMediaType(descriptor.mediaType) || isIndexMediaType(descriptor.mediaType);
    if (!maybeManifest) continue;
    try {
      const bytes = await readFile(blobPathIn(root, descriptor.digest));
      const parsed = parseAnyManifest(bytes, descriptor.mediaType, descriptor.digest);
      if (parsed.kind === 'index') {
        queue.push(...parsed.index.manifests);
      } else {
        seen.add(parsed.manifest.config.digest);
        for (const layer of parsed.manifest.layers) seen.add(layer.digest);
      }
    } catch {
      // A missing or broken manifest references nothing we could keep alive.
    }
  }
  return seen;
}
