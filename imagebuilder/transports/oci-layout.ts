import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, type Stats } from 'node:fs';
import { link, mkdir, open, readFile, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { DigestStream, VerifyingStream, digestAlgorithm, digestHex } from '../oci/digest.js';
import { BuildfleetError, isBuildfleetError } from '../oci/errors.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../oci/media-types.js';
import { formatReference, type OciLayoutReference } from '../oci/reference.js';
import { Descriptor, ImageConfig, Index, digestPattern, parseAnyManifest, parseJson } from '../oci/schemas.js';
import { selectPlatform } from '../oci/platform.js';
import { tempPathBeside, writeFileAtomically } from './files.js';
import type { BlobToStore, DestinationPreferences, ImageDestination, ImageSource, OpenBlobOptions, ResolveOptions, ResolvedImage } from './types.js';

/**
 * The `oci:DIR[:TAG]` transport: an OCI image layout directory (image-spec image-layout.md).
 *
 *   DIR/oci-layout          {"imageLayoutVersion":"1.0.0"}
 *   DIR/index.json          an image index; entries are tagged by the ref.name annotation
 *   DIR/blobs/<alg>/<hex>   content-addressed blobs
 *
 * Writers put blobs and manifests first and change index.json last (temp + rename, under
 * DIR/index.json.lock), so a reader never sees an entry naming an incomplete image. Temp files
 * are dot-files named `.NAME.tmp-PID-RAND`: readers only open blobs by digest and never see them.
 */

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

const LAYOUT_FILE = 'oci-layout';
const INDEX_FILE = 'index.json';
const LOCK_FILE = 'index.json.lock';
const LAYOUT_CONTENT = '{"imageLayoutVersion":"1.0.0"}';
const EMPTY_INDEX = `{"schemaVersion":2,"mediaType":"${MediaType.ociIndex}","manifests":[]}`;
/** Manifests, indexes and configs are read whole: refuse absurd sizes instead of filling memory. */
const MAX_JSON_BLOB = 64 * 1024 * 1024;
const MAX_NESTING = 4;
const TEMP_NAME = /^\..+\.tmp-(\d+)-[0-9a-f]{8}$/;

const LayoutFile = z.looseObject({ imageLayoutVersion: z.string() });
const LockContent = z.looseObject({ pid: z.number().int(), host: z.string(), nonce: z.string(), created: z.string().optional() });

// ---------------------------------------------------------------------------------------------
// Shared helpers

function shortDigest(digest: string): string {
  return `${digestAlgorithm(digest)}:${digestHex(digest).slice(0, 12)}`;
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/** One-line errors for filesystem failures; a missing file is 'not-found', the rest is the environment's. */
function fsError(err: unknown, what: string): BuildfleetError {
  if (isBuildfleetError(err)) return err;
  const code = errnoCode(err);
  if (code === 'ENOENT') return new BuildfleetError('not-found', `${what}: no such file`, { cause: err });
  const reason = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'ENOSPC' ? 'no space left on device' : (err as Error).message;
  return new BuildfleetError('environment', `${what}: ${reason}`, { cause: err });
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw fsError(err, path);
  }
}

function blobPathIn(root: string, digest: string): string {
  // The digest pattern keeps the path inside blobs/ (no separators, no "..").
  if (!digestPattern.test(digest)) throw new BuildfleetError('format', `"${digest}" is not a sha256/sha512 digest`);
  return join(root, 'blobs', digestAlgorithm(digest), digestHex(digest));
}

function refName(entry: Descriptor): string | undefined {
  return entry.annotations?.[REF_NAME_ANNOTATION];
}

function describeEntries(index: Index): string {
  const names = index.manifests.map((entry) => refName(entry) ?? `untagged ${shortDigest(entry.digest)}`);
  return names.length > 0 ? names.join(', ') : 'none';
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/**
 * Creates `path` with `content` only if it does not exist, atomically (a reader never sees a
 * half-written file): write a temp file, then hard-link it into place. False when it existed.
 */
async function createExclusive(path: string, content: string): Promise<boolean> {
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
  }
}

/** Writes a small file by temp + fsync + rename: readers see the old or the new content, never a mix. */
async function replaceFileAtomically(path: string, content: string, temps?: Set<string>): Promise<void> {
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
  }
}

/** Reads a whole (small) blob and checks its size and digest against the descriptor. */
async function readVerifiedBlob(root: string, descriptor: Descriptor, what: string): Promise<Buffer> {
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
    if (errnoCode(err) === 'ENOENT') throw new BuildfleetError('not-found', `${what}: blob ${descriptor.digest} is missing from the layout`);
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
async function checkLayoutFile(root: string, label: string): Promise<'ok' | 'absent'> {
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
async function readIndexJson(root: string, label: string): Promise<{ index: Index; raw: Record<string, unknown> } | undefined> {
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
async function referencedBlobs(root: string, index: Index): Promise<Set<string>> {
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

// ---------------------------------------------------------------------------------------------
// Lock on index.json updates

type LockRelease = () => Promise<void>;

/**
 * Takes DIR/index.json.lock (created exclusively, holding pid, host and a nonce). Waits up to
 * `timeoutMs` for a live holder; a lock left by a dead process on this host is taken over.
 */
async function acquireIndexLock(root: string, label: string, timeoutMs: number): Promise<LockRelease> {
  const lockPath = join(root, LOCK_FILE);
  const nonce = randomBytes(8).toString('hex');
  const content = JSON.stringify({ pid: process.pid, host: hostname(), nonce, created: new Date().toISOString() });
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    let created: boolean;
    try {
      created = await createExclusive(lockPath, content);
    } catch (err) {
      throw fsError(err, `${label}: cannot create ${lockPath}`);
    }
    if (created) {
      return async () => {
        try {
          const held = LockContent.safeParse(JSON.parse(await readFile(lockPath, 'utf8')));
          if (held.success && held.data.nonce === nonce) await rm(lockPath, { force: true });
        } catch {
          // Already gone: nothing to release.
        }
      };
    }
    let holder: z.infer<typeof LockContent> | undefined;
    let holderText = '';
    try {
      holderText = await readFile(lockPath, 'utf8');
      const parsed = LockContent.safeParse(JSON.parse(holderText));
      holder = parsed.success ? parsed.data : undefined;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue; // released between our create and read
    }
    if (holder && holder.host === hostname() && !pidAlive(holder.pid)) {
      // Stale: move it aside, and check we moved the stale one (not a lock someone just took).
      const aside = tempPathBeside(lockPath);
      try {
        await rename(lockPath, aside);
        const moved = await readFile(aside, 'utf8');
        if (moved !== holderText) await link(aside, lockPath).catch(() => undefined);
      } catch {
        // Someone else took it over first; retry.
      } finally {
        await rm(aside, { force: true });
      }
      continue;
    }
    if (Date.now() >= deadline) {
      const who = holder ? `pid ${holder.pid} on ${holder.host}${holder.created ? ` since ${holder.created}` : ''}` : 'an unknown writer';
      throw new BuildfleetError(
        'environment',
        `${label}: the layout is locked by ${who} (${lockPath}); if no writer is running, remove that file`,
      );
    }
    await sleep(Math.min(20 + attempt * 10, 200) + Math.floor(Math.random() * 20));
  }
}

// ---------------------------------------------------------------------------------------------
// Source

class OciLayoutSource implements ImageSource {
  readonly reference: OciLayoutReference;
  private readonly root: string;
  private readonly label: string;

  constructor(ref: OciLayoutReference) {
    this.reference = ref;
    this.root = ref.path;
    this.label = formatReference(ref);
  }

  async check(): Promise<void> {
    const info = await statOrUndefined(this.root);
    if (!info) throw new BuildfleetError('not-found', `${this.label}: no such directory ${this.root}`);
    if (!info.isDirectory()) throw new BuildfleetError('format', `${this.label}: ${this.root} is not a directory`);
    if ((await checkLayoutFile(this.root, this.label)) === 'absent') {
      throw new BuildfleetError('format', `${this.label}: ${this.root} is not an OCI image layout (no ${LAYOUT_FILE} file)`);
    }
  }

  /** The index.json entry the reference names. */
  private pickEntry(index: Index, options: ResolveOptions): Descriptor {
    const { tag } = this.reference;
    if (tag === undefined) {
      const only = index.manifests[0];
      if (index.manifests.length === 1 && only) return only;
      if (index.manifests.length === 0) throw new BuildfleetError('not-found', `${this.label}: the layout holds no image`);
      throw new BuildfleetError(
        'usage',
        `${this.label}: the layout holds ${index.manifests.length} images (${describeEntries(index)}); name one as oci:${this.root}:TAG`,
      );
    }
    const matching = index.manifests.filter((entry) => refName(entry) === tag);
    const first = matching[0];
    if (!first) {
      throw new BuildfleetError('not-found', `${this.label}: no image tagged "${tag}" in the layout (it has: ${describeEntries(index)})`);
    }
    if (matching.length === 1) return first;
    // Some tools tag one entry per platform; choose among them like in an index.
    if (matching.every((entry) => entry.platform)) {
      return selectPlatform({ schemaVersion: 2, manifests: matching }, options.platform, `${this.label}`);
    }
    throw new BuildfleetError('format', `${this.label}: ${matching.length} entries of index.json are tagged "${tag}"`);
  }

  async resolve(options: ResolveOptions = {}): Promise<ResolvedImage> {
    const read = await readIndexJson(this.root, this.label);
    if (!read) throw new BuildfleetError('format', `${this.label}: ${this.root} is not an OCI image layout (no ${INDEX_FILE})`);
    let descriptor = this.pickEntry(read.index, options);
    let parent: ResolvedImage['index'];
    for (let depth = 0; ; depth++) {
      const what = `${this.label}: manifest ${shortDigest(descriptor.digest)}`;
      const bytes = await readVerifiedBlob(this.root, descriptor, what);
      const parsed = parseAnyManifest(bytes, descriptor.mediaType, what);
      if (parsed.kind === 'index') {
        if (depth >= MAX_NESTING) throw new BuildfleetError('format', `${what}: image indexes nested more than ${MAX_NESTING} deep`);
        const chosen = selectPlatform(parsed.index, options.platform, `${this.label}: image index ${shortDigest(descriptor.digest)}`);
        parent = { index: parsed.index, bytes, digest: descriptor.digest, mediaType: parsed.index.mediaType ?? descriptor.mediaType };
        descriptor = chosen;
        continue;
      }
      const { manifest } = parsed;
      const configWhat = `${this.label}: config ${shortDigest(manifest.config.digest)}`;
      const configBytes = await readVerifiedBlob(this.root, manifest.config, configWhat);
      const config = parseJson(ImageConfig, configBytes, configWhat);
      return {
        manifest,
        manifestBytes: bytes,
        manifestDigest: descriptor.digest,
        manifestMediaType: manifest.mediaType ?? descriptor.mediaType,
        config,
        configBytes,
        ...(parent && { index: parent }),
      };
    }
  }

  async openBlob(descriptor: Descriptor, options: OpenBlobOptions = {}): Promise<Readable> {
    const what = `${this.label}: blob ${shortDigest(descriptor.digest)}`;
    const path = blobPathIn(this.root, descriptor.digest);
    let handle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new BuildfleetError('not-found', `${what} is missing from the layout`);
      throw fsError(err, what);
    }
    const input = handle.createReadStream();
    const verifier = new VerifyingStream(descriptor.digest, descriptor.size, what, { hash: options.verify !== false });
    input.on('error', (err) => verifier.destroy(fsError(err, what)));
    verifier.on('close', () => input.destroy());
    input.pipe(verifier);
    return verifier;
  }

  async close(): Promise<void> {
    // Nothing held between calls.
  }
}

export async function openOciLayoutSource(ref: OciLayoutReference): Promise<ImageSource> {
  const source = new OciLayoutSource(ref);
  await source.check();
  return source;
}

// ---------------------------------------------------------------------------------------------
// Destination

export type OciLayoutDestinationOptions = {
  /** How long commit() waits for another writer's index.json.lock (default 10 s). */
  lockTimeoutMs?: number;
};

type PendingManifest = { descriptor: Descriptor; named: Descriptor[] };

class OciLayoutDestination implements ImageDestination {
  readonly reference: OciLayoutReference;
  readonly preferences: DestinationPreferences = { manifestFormat: 'oci', layerCompression: 'keep' };
  private readonly root: string;
  private readonly label: string;
  private readonly lockTimeoutMs: number;
  /** What open() created, so abort() can take the layout back to "absent". */
  private readonly createdAtOpen = { dir: false, layoutFile: false, indexFile: false, blobsDir: false };
  private readonly createdAlgDirs = new Set<string>();
  /** Blob files this destination created (not those that were there already). */
  private readonly createdBlobs = new Map<string, string>();
  private readonly temps = new Set<string>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly sources = new Set<Readable>();
  private pending: PendingManifest | undefined;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(ref: OciLayoutReference, options: OciLayoutDestinationOptions) {
    this.reference = ref;
    this.root = ref.path;
    this.label = formatReference(ref);
    this.lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
  }

  async init(): Promise<void> {
    const { root, label } = this;
    try {
      const info = await statOrUndefined(root);
      if (info && !info.isDirectory()) throw new BuildfleetError('format', `${label}: ${root} exists and is not a directory`);
      if (!info) {
        await mkdir(dirname(root), { recursive: true });
        try {
          await mkdir(root);
          this.createdAtOpen.dir = true;
        } catch (err) {
          if (errnoCode(err) !== 'EEXIST') throw err;
        }
      }
      if ((await checkLayoutFile(root, label)) === 'absent') {
        const entries = await readdir(root);
        if (entries.length > 0) {
          throw new BuildfleetError('format', `${label}: ${root} is not empty and is not an OCI image layout (no ${LAYOUT_FILE} file)`);
        }
        this.createdAtOpen.layoutFile = await createExclusive(join(root, LAYOUT_FILE), LAYOUT_CONTENT);
        if (!this.createdAtOpen.layoutFile) await checkLayoutFile(root, label);
      }
      if ((await readIndexJson(root, label)) === undefined) {
        this.createdAtOpen.indexFile = await createExclusive(join(root, INDEX_FILE), EMPTY_INDEX);
      }
      if (!(await statOrUndefined(join(root, 'blobs')))) {
        try {
          await mkdir(join(root, 'blobs'));
          this.createdAtOpen.blobsDir = true;
        } catch (err) {
          if (errnoCode(err) !== 'EEXIST') throw err;
        }
      }
    } catch (err) {
      throw fsError(err, label);
    }
  }

  private blobPath(digest: string): string {
    return blobPathIn(this.root, digest);
  }

  private assertOpen(action: string): void {
    if (this.state !== 'open') throw new BuildfleetError('usage', `${this.label}: ${action} after ${this.state === 'committed' ? 'commit' : 'abort'}`);
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inflight.add(work);
    const forget = () => this.inflight.delete(work);
    work.then(forget, forget);
    return work;
  }

  private async ensureAlgDir(algorithm: string): Promise<void> {
    const dir = join(this.root, 'blobs', algorithm);
    if (await statOrUndefined(dir)) return;
    // mkdir -p says whether it created anything: only then is the directory ours to remove.
    if ((await mkdir(dir, { recursive: true })) !== undefined) this.createdAlgDirs.add(dir);
  }

  private async blobPresent(descriptor: Descriptor): Promise<boolean> {
    const info = await statOrUndefined(this.blobPath(descriptor.digest));
    return info !== undefined && info.isFile() && info.size === descriptor.size;
  }

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    return this.blobPresent(descriptor);
  }

  async putBlob(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    this.assertOpen('putBlob');
    return this.track(this.storeBlobWithRetries(open, blob));
  }

  private async storeBlobWithRetries(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.storeBlob(open, blob);
      } catch (err) {
        // Only a flaky source (a registry connection) is worth reopening; bad content is final.
        const retry = isBuildfleetError(err) && err.kind === 'network' && attempt < 3 && this.state === 'open';
        if (!retry) throw fsError(err, `${this.label}: storing blob${blob.digest ? ` ${shortDigest(blob.digest)}` : ''}`);
      }
    }
  }

  private async storeBlob(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    if (blob.digest !== undefined) this.blobPath(blob.digest); // reject a malformed digest before opening anything
    const source = await open();
    if (this.state !== 'open') {
      source.destroy();
      throw new BuildfleetError('usage', `${this.label}: putBlob after abort`);
    }
    this.sources.add(source);
    try {
      const what = `${this.label}: blob${blob.digest ? ` ${shortDigest(blob.digest)}` : ''}`;
      if (blob.digest !== undefined && digestAlgorithm(blob.digest) === 'sha256') {
        const { digest } = blob;
        const path = this.blobPath(digest);
        await this.ensureAlgDir('sha256');
        const existed = (await statOrUndefined(path)) !== undefined;
        const written = await writeFileAtomically(source, path, { digest, ...(blob.size !== undefined && { size: blob.size }), what });
        if (!existed) this.createdBlobs.set(path, digest);
        return { mediaType: blob.mediaType, digest, size: written.size };
      }
      // Digest unknown (recompressed on the way), or not sha256 (writeFileAtomically hashes sha256
      // only): hash or verify into a temp file in the blobs directory, then name it.
      const algorithm = blob.digest !== undefined ? digestAlgorithm(blob.digest) : 'sha256';
      await this.ensureAlgDir(algorithm);
      const temp = tempPathBeside(join(this.root, 'blobs', algorithm, 'incoming'));
      this.temps.add(temp);
      try {
        const hasher = new DigestStream();
        const checks = blob.digest !== undefined ? [new VerifyingStream(blob.digest, blob.size, what)] : [];
        await pipeline([source, ...checks, hasher, createWriteStream(temp, { flags: 'wx' })]);
        if (blob.size !== undefined && hasher.size !== blob.size) {
          throw new BuildfleetError('integrity', `${what}: got ${hasher.size} bytes, expected ${blob.size}`);
        }
        const digest = blob.digest ?? hasher.digest;
        const path = this.blobPath(digest);
        const existed = (await statOrUndefined(path)) !== undefined;
        await rename(temp, path);
        if (!existed) this.createdBlobs.set(path, digest);
        return { mediaType: blob.mediaType, digest, size: hasher.size };
      } finally {
        await rm(temp, { force: true });
        this.temps.delete(temp);
      }
    } finally {
      this.sources.delete(source);
    }
  }

  async putManifest(manifestBytes: Buffer, mediaType: string): Promise<string> {
    this.assertOpen('putManifest');
    return this.track(this.storeManifest(manifestBytes, mediaType));
  }

  private async storeManifest(manifestBytes: Buffer, mediaType: string): Promise<string> {
    const what = `${this.label}: manifest`;
    if (mediaType !== MediaType.ociManifest && mediaType !== MediaType.ociIndex) {
      throw new BuildfleetError('unsupported', `${what}: media type ${mediaType} cannot go into an OCI layout (convert to ${MediaType.ociManifest} first)`);
    }
    const parsed = parseAnyManifest(manifestBytes, mediaType, what);
    const declared = parsed.kind === 'index' ? parsed.index.mediaType : parsed.manifest.mediaType;
    const isIndex = mediaType === MediaType.ociIndex;
    if ((declared !== undefined && declared !== mediaType) || isIndex !== (parsed.kind === 'index')) {
      throw new BuildfleetError('format', `${what}: content is ${declared ?? parsed.kind}, not ${mediaType}`);
    }
    const named = parsed.kind === 'index' ? parsed.index.manifests : [parsed.manifest.config, ...parsed.manifest.layers];
    const missing = await this.missingBlobs(named);
    if (missing.length > 0) {
      throw new BuildfleetError('not-found', `${what} names ${missing.length} blob(s) not in the layout: ${missing.map(shortDigest).join(', ')}`);
    }
    const digest = 'sha256:' + createHash('sha256').update(manifestBytes).digest('hex');
    const path = this.blobPath(digest);
    try {
      await this.ensureAlgDir('sha256');
      const existed = (await statOrUndefined(path)) !== undefined;
      await writeFileAtomically(Readable.from([manifestBytes]), path, { digest, size: manifestBytes.length, what });
      if (!existed) this.createdBlobs.set(path, digest);
    } catch (err) {
      throw fsError(err, what);
    }
    this.pending = { descriptor: { mediaType, digest, size: manifestBytes.length }, named };
    return digest;
  }

  private async missingBlobs(descriptors: readonly Descriptor[]): Promise<string[]> {
    const missing: string[] = [];
    for (const descriptor of descriptors) if (!(await this.blobPresent(descriptor))) missing.push(descriptor.digest);
    return missing;
  }

  /** Points index.json at the last manifest (or index) put, tagged with the reference's tag. */
  async commit(): Promise<void> {
    if (this.state === 'committed') return;
    this.assertOpen('commit');
    const pending = this.pending;
    if (!pending) throw new BuildfleetError('usage', `${this.label}: commit without a manifest (putManifest first)`);
    await Promise.allSettled([...this.inflight]);
    const release = await acquireIndexLock(this.root, this.label, this.lockTimeoutMs);
    try {
      // Under the lock: a concurrent abort may have removed a blob we share with it.
      const missing = await this.missingBlobs([pending.descriptor, ...pending.named]);
      if (missing.length > 0) {
        throw new BuildfleetError('not-found', `${this.label}: cannot commit, blob(s) gone from the layout: ${missing.map(shortDigest).join(', ')}`);
      }
      const current = await readIndexJson(this.root, this.label);
      const raw: Record<string, unknown> = current?.raw ?? (JSON.parse(EMPTY_INDEX) as Record<string, unknown>);
      const entries = (current ? current.raw.manifests : []) as unknown[];
      const parsedEntries = current?.index.manifests ?? [];
      const tag = this.reference.tag;
      const entry: Descriptor = { ...pending.descriptor, ...(tag !== undefined && { annotations: { [REF_NAME_ANNOTATION]: tag } }) };
      let next: unknown[];
      if (tag !== undefined) {
        next = [];
        let placed = false;
        entries.forEach((existing, i) => {
          if (parsedEntries[i] && refName(parsedEntries[i]) === tag) {
            if (!placed) next.push(entry);
            placed = true;
          } else {
            next.push(existing);
          }
        });
        if (!placed) next.push(entry);
      } else {
        const already = parsedEntries.some((existing) => existing.digest === entry.digest && refName(existing) === undefined);
        next = already ? entries : [...entries, entry];
      }
      raw.manifests = next;
      await replaceFileAtomically(join(this.root, INDEX_FILE), JSON.stringify(raw), this.temps);
      this.state = 'committed';
    } catch (err) {
      throw fsError(err, `${this.label}: updating ${INDEX_FILE}`);
    } finally {
      await release();
    }
  }

  /** Removes blobs and temp files this destination created; the layout is left as it was. */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    for (const source of this.sources) source.destroy(new BuildfleetError('usage', `${this.label}: aborted`));
    await Promise.allSettled([...this.inflight]);
    let release: LockRelease | undefined;
    try {
      release = await acquireIndexLock(this.root, this.label, this.lockTimeoutMs);
    } catch {
      // Best effort: clean up even if another writer holds the lock for too long.
    }
    try {
      let referenced = new Set<string>();
      const current = await readIndexJson(this.root, this.label).catch(() => undefined);
      if (current) referenced = await referencedBlobs(this.root, current.index);
      for (const [path, digest] of this.createdBlobs) {
        // Another writer may have committed an image sharing a blob we created: keep those.
        if (!referenced.has(digest)) await rm(path, { force: true });
      }
      this.createdBlobs.clear();
      for (const temp of this.temps) await rm(temp, { force: true });
      for (const dir of this.createdAlgDirs) await rmdir(dir).catch(() => undefined);
      const { createdAtOpen } = this;
      if (createdAtOpen.blobsDir) await rmdir(join(this.root, 'blobs')).catch(() => undefined);
      if (createdAtOpen.indexFile && current && current.index.manifests.length === 0) await rm(join(this.root, INDEX_FILE), { force: true });
      if (createdAtOpen.layoutFile) {
        const leftovers = (await readdir(this.root).catch(() => [] as string[])).filter((name) => name !== LAYOUT_FILE && name !== LOCK_FILE);
        if (leftovers.length === 0) await rm(join(this.root, LAYOUT_FILE), { force: true });
      }
    } finally {
      await release?.();
    }
    if (this.createdAtOpen.dir) await rmdir(this.root).catch(() => undefined);
  }
}

export async function openOciLayoutDestination(ref: OciLayoutReference, options: OciLayoutDestinationOptions = {}): Promise<ImageDestination> {
  const destination = new OciLayoutDestination(ref, options);
  await destination.init();
  return destination;
}

/**
 * Removes what crashed writers left in a layout: temp files (`.NAME.tmp-PID-RAND`) and
 * index.json.lock of processes no longer running on this host. Returns the removed paths.
 * Only for layouts written from this host: a pid says nothing about other machines.
 */
export async function removeOciLayoutLeftovers(path: string): Promise<string[]> {
  const removed: string[] = [];
  const dirs = [path];
  const algs = await readdir(join(path, 'blobs')).catch(() => [] as string[]);
  dirs.push(join(path, 'blobs'), ...algs.map((alg) => join(path, 'blobs', alg)));
  for (const dir of dirs) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const match = TEMP_NAME.exec(name);
      if (match && !pidAlive(Number(match[1]))) {
        await rm(join(dir, name), { force: true });
        removed.push(join(dir, name));
      }
    }
  }
  const lockPath = join(path, LOCK_FILE);
  try {
    const holder = LockContent.safeParse(JSON.parse(await readFile(lockPath, 'utf8')));
    if (holder.success && holder.data.host === hostname() && !pidAlive(holder.data.pid)) {
      await rm(lockPath, { force: true });
      removed.push(lockPath);
    }
  } catch {
    // No lock, or unreadable: leave it.
  }
  return removed;
}
