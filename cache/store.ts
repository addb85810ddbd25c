import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, utimesSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { acquireLock, breakIfStale, pidAlive, tryLock } from '../imagebuilder/file-lock.js';
import { archDir, type Libc, type ToolchainKey } from './key.js';
import { checkSet, firstMismatch, walkTree, type TreeFile } from './tree.js';

/**
 * The local store, in the hosted runners' tool-cache layout so their setup scripts find entries:
 *
 *   DIR/TOOL/VERSION/ARCH/            the toolchain
 *   DIR/TOOL/VERSION/ARCH.complete    the marker, written last: a JSON EntryRecord; its mtime is the last use
 *   DIR/TOOL/VERSION/ARCH.files       every file's stats, for `--verify`
 *   DIR/.buildfleet/locks/            one lock file per key (O_EXCL, see imagebuilder/file-lock.ts)
 *   DIR/.buildfleet/tmp/PID.RANDOM/   work in progress, on the same filesystem so publishing is a rename
 *
 * An entry exists only with its marker. Publishing renames the finished tree into place and then
 * renames the marker in; removing takes the marker away first. So a crash at any point leaves
 * either a whole entry or none (a tree without marker is removed by the next get of its key).
 */

export type EntrySource = 'registry' | 'installer';

export type EntryRecord = {
  buildfleet: 1;
  tool: string;
  version: string;
  os: string;
  architecture: string;
  libc: Libc;
  source: EntrySource;
  /** The registry blob the tree came from or was pushed as. */
  digest?: string;
  files: number;
  bytes: number;
  diskBytes: number;
  created: string;
  /** What every hit checks (tree.ts checkSet). */
  check: TreeFile[];
};

export type LocalEntry = { path: string; record: EntryRecord; lastUsed: Date };

export type Lookup = { state: 'hit'; path: string; record: EntryRecord } | { state: 'absent' } | { state: 'corrupt'; reason: string };

export class LocalStore {
  readonly tmpRoot: string;
  private readonly lockRoot: string;

  constructor(readonly dir: string) {
    this.tmpRoot = join(dir, '.buildfleet', 'tmp');
    this.lockRoot = join(dir, '.buildfleet', 'locks');
  }

  entryPath(key: Pick<ToolchainKey, 'tool' | 'version' | 'architecture'>): string {
    return join(this.dir, key.tool, key.version, archDir(key));
  }

  private markerPath(key: Pick<ToolchainKey, 'tool' | 'version' | 'architecture'>): string {
    return `${this.entryPath(key)}.complete`;
  }

  private filesPath(key: Pick<ToolchainKey, 'tool' | 'version' | 'architecture'>): string {
    return `${this.entryPath(key)}.files`;
  }

  lockPath(key: Pick<ToolchainKey, 'tool' | 'version' | 'architecture'>): string {
    return join(this.lockRoot, `${key.tool}@${key.version}@${archDir(key)}.lock`);
  }

  /**
   * The fast path, synchronous on purpose (a few hundred stats in a row are quickest without the
   * thread pool): the marker, the key it records, and the stats of the check set. `full` compares
   * every file against ARCH.files instead.
   */
  lookup(key: ToolchainKey, options: { full?: boolean; touch?: boolean } = {}): Lookup {
    const path = this.entryPath(key);
    let record: EntryRecord;
    try {
      record = JSON.parse(readFileSync(this.markerPath(key), 'utf8')) as EntryRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'absent' };
      return { state: 'corrupt', reason: `its marker is unreadable (${(err as Error).message})` };
    }
    if (record.buildfleet !== 1 || record.tool !== key.tool || record.version !== key.version || !Array.isArray(record.check)) {
      return { state: 'corrupt', reason: 'its marker does not describe it' };
    }
    if (record.libc !== key.libc || record.os !== key.os) return { state: 'corrupt', reason: `it was made for ${record.os}/${record.libc}` };
    if (!statSync(path, { throwIfNoEntry: false })?.isDirectory()) return { state: 'corrupt', reason: 'its directory is missing' };
    let expected = record.check;
    if (options.full) {
      try {
        expected = JSON.parse(readFileSync(this.filesPath(key), 'utf8')) as TreeFile[];
      } catch {
        return { state: 'corrupt', reason: 'its file list is missing' };
      }
    }
    const mismatch = firstMismatch(path, expected);
    if (mismatch) return { state: 'corrupt', reason: mismatch };
    if (options.touch !== false) {
      const now = new Date();
      // The marker's mtime is the last use (gc is LRU); a failure to record it costs nothing else.
      try {
        utimesSync(this.markerPath(key), now, now);
      } catch {
        /* read-only store */
      }
    }
    return { state: 'hit', path, record };
  }

  /** A fresh directory for work in progress, named after this process so a sweep knows when it is abandoned. */
  async workDir(): Promise<string> {
    await mkdir(this.tmpRoot, { recursive: true });
    const dir = join(this.tmpRoot, `${process.pid}.${randomBytes(6).toString('hex')}`);
    await mkdir(dir);
    return dir;
  }

  /** Removes the work directories of processes that are gone (killed mid-install or mid-download). */
  async sweep(): Promise<string[]> {
    const names = await readdir(this.tmpRoot).catch(() => [] as string[]);
    const swept: string[] = [];
    for (const name of names) {
      const pid = Number(name.split('.')[0]);
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) continue;
      await rm(join(this.tmpRoot, name), { recursive: true, force: true });
      swept.push(name);
    }
    return swept;
  }

  /** Waits for the key's lock (breaking it when its holder died); resolves to its release. */
  async lock(key: ToolchainKey, signal?: AbortSignal): Promise<() => Promise<void>> {
    await mkdir(this.lockRoot, { recursive: true });
    return acquireLock(this.lockPath(key), { note: 'get', ...(signal && { signal }) });
  }

  /** Takes the key's lock only when it is free (gc: a held lock means the entry is in use). */
  async tryLock(key: Pick<ToolchainKey, 'tool' | 'version' | 'architecture'>): Promise<(() => Promise<void>) | undefined> {
    await mkdir(this.lockRoot, { recursive: true });
    const lock = this.lockPath(key);
    if (await tryLock(lock, 'gc')) return () => rm(lock, { force: true });
    // A lock whose holder died is no use: break it and try once more.
    if ((await breakIfStale(lock)) && (await tryLock(lock, 'gc'))) return () => rm(lock, { force: true });
    return undefined;
  }

  /**
   * Publishes the finished tree `from` (inside a work dir) as the key's entry: file list, then the
   * tree (rename), then the marker (rename). The caller holds the key's lock.
   */
  async publish(key: ToolchainKey, from: string, meta: { source: EntrySource; digest?: string }): Promise<string> {
    const summary = walkTree(from);
    const record: EntryRecord = {
      buildfleet: 1,
      tool: key.tool,
      version: key.version,
      os: key.os,
      architecture: key.architecture,
      libc: key.libc,
      source: meta.source,
      ...(meta.digest && { digest: meta.digest }),
      files: summary.files.length,
      bytes: summary.bytes,
      diskBytes: summary.diskBytes,
      created: new Date().toISOString(),
      check: checkSet(summary.files),
    };
    const path = this.entryPath(key);
    await this.discard(key);
    await mkdir(join(path, '..'), { recursive: true });
    await writeAtomically(this.filesPath(key), JSON.stringify(summary.files), this.tmpRoot);
    await rename(from, path).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EXDEV' ? new BuildfleetError('environment', `cache: ${this.tmpRoot} and ${path} are on different filesystems (a mount inside the cache directory?)`) : err;
    });
    await writeAtomically(this.markerPath(key), JSON.stringify(record), this.tmpRoot);
    return path;
  }

  /** Removes the key's entry, marker first; the tree is moved into the work area before it is deleted. */
  async discard(key: Pick<ToolchainKey, 'tool' | 'version' | 'architecture'>): Promise<void> {
    await rm(this.markerPath(key), { force: true });
    const path = this.entryPath(key);
    if (await stat(path).then(() => true, () => false)) {
      await mkdir(this.tmpRoot, { recursive: true });
      const aside = join(this.tmpRoot, `${process.pid}.${randomBytes(6).toString('hex')}.discarded`);
      await rename(path, aside);
      await rm(aside, { recursive: true, force: true });
    }
    await rm(this.filesPath(key), { force: true });
  }

  /** Every entry with a marker. */
  async list(): Promise<LocalEntry[]> {
    const entries: LocalEntry[] = [];
    for (const tool of await readdir(this.dir).catch(() => [] as string[])) {
      if (tool.startsWith('.')) continue;
      for (const version of await readdir(join(this.dir, tool)).catch(() => [] as string[])) {
        for (const name of await readdir(join(this.dir, tool, version)).catch(() => [] as string[])) {
          if (!name.endsWith('.complete')) continue;
          const marker = join(this.dir, tool, version, name);
          const [text, stats] = await Promise.all([readFile(marker, 'utf8').catch(() => undefined), stat(marker).catch(() => undefined)]);
          if (!text || !stats) continue;
          try {
            const record = JSON.parse(text) as EntryRecord;
            entries.push({ path: marker.slice(0, -'.complete'.length), record, lastUsed: stats.mtime });
          } catch {
            continue;
          }
        }
      }
    }
    return entries;
  }
}

/** Writes `path` through a temp file in `tmpRoot` (same filesystem) and a rename: never half-written. */
async function writeAtomically(path: string, content: string, tmpRoot: string): Promise<void> {
  await mkdir(tmpRoot, { recursive: true });
  const temp = join(tmpRoot, `${process.pid}.${randomBytes(6).toString('hex')}.part`);
  try {
    await writeFile(temp, content);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}
