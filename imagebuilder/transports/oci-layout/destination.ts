import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestStream, VerifyingStream, digestAlgorithm } from '../../oci/digest.js';
import { BuildfleetError, isBuildfleetError } from '../../errors.js';
import { MediaType } from '../../oci/media-types.js';
import { formatReference, type OciLayoutReference } from '../../oci/reference.js';
import { Descriptor, parseAnyManifest } from '../../oci/schemas.js';
import { isTempBeside, tempPathBeside, writeFileAtomically } from '../files.js';
import { untrackTemp } from '../temp-files.js';
import type { BlobToStore, DestinationPreferences, ImageDestination } from '../types.js';
import { acquireIndexLock, sweepDeadWritersTemps, type LockRelease } from './index-lock.js';
import {
  EMPTY_INDEX,
  INDEX_FILE,
  LAYOUT_CONTENT,
  LAYOUT_FILE,
  LOCK_FILE,
  REF_NAME_ANNOTATION,
  blobPathIn,
  checkLayoutFile,
  createExclusive,
  errnoCode,
  fsError,
  readIndexJson,
  referencedBlobs,
  refName,
  replaceFileAtomically,
  shortDigest,
  statOrUndefined,
} from './layout-files.js';

/**
 * Writing an image into an OCI layout: blobs and the manifest first, index.json last (temp +
 * rename under the lock); abort() takes back what this destination created.
 */

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
      // Killed writers' partial blobs would otherwise stay forever: nothing else ever names them.
      if (info) await sweepDeadWritersTemps(root);
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
        // Another writer may be opening the same new layout right now: its temp file for the
        // marker can be there, or the marker itself (and what follows it), made since the check above.
        const entries = (await readdir(root)).filter((name) => !isTempBeside(name, LAYOUT_FILE));
        if (entries.length > 0 && (await checkLayoutFile(root, label)) === 'absent') {
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
      const out = createWriteStream(temp, { flags: 'wx' });
      try {
        const hasher = new DigestStream();
        const checks = blob.digest !== undefined ? [new VerifyingStream(blob.digest, blob.size, what)] : [];
        await pipeline([source, ...checks, hasher, out]);
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
        // On an early failure pipeline() may settle before the file is even created: wait for it,
        // or the rm below runs first and the file appears after it.
        if (!out.closed) await once(out, 'close').catch(() => undefined);
        await rm(temp, { force: true });
        this.temps.delete(temp);
        untrackTemp(temp);
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
