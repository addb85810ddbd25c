import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { RegistryOptions, RegistryClient } from '../imagebuilder/registry/index.js';
import { collect, freeBytes, type GcResult, type GcTarget } from './gc.js';
import { runInstaller } from './installer.js';
import { describeKey, parseRegistryRepo, type ToolchainKey } from './key.js';
import { CacheMetrics } from './metrics.js';
import { diskError, packTree, type Codec } from './pack.js';
import { RemoteStore } from './remote.js';
import { LocalStore, type EntryRecord } from './store.js';

export type CacheOptions = {
  /** The store's directory (on the node's workload disk). */
  dir: string;
  /** HOST/REPO of the repository entries are shared through; without it the cache is local only. */
  registry?: string;
  /** Settings of the registry client, or a client to share. */
  registryOptions?: RegistryOptions | RegistryClient;
  /** Installer command for misses the registry cannot answer (see installer.ts). */
  installer?: string;
  /** Codec of pushed layers; gzip (the default) is readable by every OCI tool. */
  codec?: Codec;
  metrics?: CacheMetrics;
  /** Progress lines and the installer's output. */
  log?: (line: string) => void;
};

export type GetResult = { path: string; source: 'local' | 'registry' | 'installer'; key: ToolchainKey; digest?: string; seconds: number };

export type ListedEntry = { tool: string; version: string; arch: string; libc: string; path: string; size: number; files: number; lastUsed: string; source: string; digest?: string };

/**
 * The toolchain cache of one node: a local store first, then the registry, then the installer.
 * One get per key installs or downloads at a time (a lock file per key); what is published was
 * verified first, and appears all at once (see store.ts).
 */
export class ToolchainCache {
  readonly store: LocalStore;
  readonly metrics: CacheMetrics;
  private readonly remote: RemoteStore | undefined;

  constructor(private readonly options: CacheOptions) {
    this.store = new LocalStore(options.dir);
    this.metrics = options.metrics ?? new CacheMetrics();
    if (options.registry) {
      const { host, repo } = parseRegistryRepo(options.registry);
      this.remote = new RemoteStore(host, repo, options.registryOptions ?? {});
    }
  }

  /**
   * The path of a ready toolchain for `key`. `verify` compares every file of a local entry
   * (instead of the check set); `installer` overrides the cache's.
   */
  async get(key: ToolchainKey, options: { verify?: boolean; installer?: string; signal?: AbortSignal } = {}): Promise<GetResult> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    const fast = this.store.lookup(key, { full: options.verify === true });
    if (fast.state === 'hit') {
      this.metrics.hits.inc();
      return { path: fast.path, source: 'local', key, ...(fast.record.digest && { digest: fast.record.digest }), seconds: seconds() };
    }
    this.metrics.misses.inc();
    if (fast.state === 'corrupt') this.log(`${describeKey(key)}: local entry is corrupt (${fast.reason}); fetching it again`);

    await mkdir(this.options.dir, { recursive: true }).catch((err) => Promise.reject(diskError(err, `creating ${this.options.dir}`)));
    const release = await this.store.lock(key, options.signal);
    try {
      await this.store.sweep();
      // Another process may have published it while we waited for the lock.
      const again = this.store.lookup(key, { full: options.verify === true });
      if (again.state === 'hit') return { path: again.path, source: 'local', key, ...(again.record.digest && { digest: again.record.digest }), seconds: seconds() };
      // A corrupt entry, or a tree whose marker never came (a crash between the two renames).
      await this.store.discard(key);
      const work = await this.store.workDir();
      try {
        const fetched = await this.fromRegistry(key, work);
        if (fetched) return { ...fetched, key, seconds: seconds() };
        const installed = await this.install(key, work, options.installer ?? this.options.installer);
        return { ...installed, key, seconds: seconds() };
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    } finally {
      await release();
    }
  }

  private async fromRegistry(key: ToolchainKey, work: string): Promise<{ path: string; source: 'registry'; digest: string } | undefined> {
    if (!this.remote) return undefined;
    const layer = await this.remote.find(key);
    if (!layer) return undefined;
    const timer = this.metrics.fetchSeconds.startTimer();
    const tree = join(work, 'tree');
    await mkdir(tree);
    this.log(`${describeKey(key)}: downloading ${layer.size} bytes from ${this.remote.describe(key)}`);
    await this.remote.fetchInto(layer, tree).catch(async (err) => Promise.reject(await this.explainFull(err, `extracting ${describeKey(key)}`)));
    const path = await this.store.publish(key, tree, { source: 'registry', digest: layer.digest }).catch((err) => Promise.reject(diskError(err, `publishing ${describeKey(key)}`)));
    timer();
    this.metrics.remoteHits.inc();
    this.metrics.bytes.inc({ direction: 'down' }, layer.size);
    return { path, source: 'registry', digest: layer.digest };
  }

  private async install(key: ToolchainKey, work: string, installer: string | undefined): Promise<{ path: string; source: 'installer'; digest?: string }> {
    if (!installer) {
      const where = this.remote ? `the local cache or ${this.remote.describe(key)}` : 'the local cache (no --registry given)';
      throw new BuildfleetError('not-found', `${describeKey(key)} is not in ${where}, and no --installer was given to make it`);
    }
    const timer = this.metrics.installSeconds.startTimer();
    const prefix = join(work, 'prefix');
    await mkdir(prefix);
    this.log(`${describeKey(key)}: running the installer`);
    await runInstaller(installer, key, prefix, this.store.entryPath(key), this.options.log);
    let digest: string | undefined;
    if (this.remote) digest = await this.pushTree(key, prefix, work);
    const path = await this.store.publish(key, prefix, { source: 'installer', ...(digest && { digest }) }).catch((err) => Promise.reject(diskError(err, `publishing ${describeKey(key)}`)));
    timer();
    this.metrics.installs.inc();
    return { path, source: 'installer', ...(digest && { digest }) };
  }

  /** Packs `tree` into a blob in `work` and pushes it; the layer digest. A refused push fails the get: nothing is published. */
  private async pushTree(key: ToolchainKey, tree: string, work: string): Promise<string> {
    const remote = this.remote!;
    const codec = this.options.codec ?? 'gzip';
    const file = join(work, 'layer.blob');
    const layer = await packTree(tree, file, codec);
    this.log(`${describeKey(key)}: pushing ${layer.size} bytes to ${remote.describe(key)}`);
    await remote.push(key, file, layer, codec);
    this.metrics.bytes.inc({ direction: 'up' }, layer.size);
    return layer.digest;
  }

  /** Packs and pushes an existing tree (`cache put`); the local store is not changed. */
  async put(key: ToolchainKey, tree: string): Promise<{ reference: string; digest: string; size: number }> {
    if (!this.remote) throw new BuildfleetError('usage', 'cache put needs --registry HOST/REPO');
    await mkdir(this.options.dir, { recursive: true });
    const work = await this.store.workDir();
    try {
      const codec = this.options.codec ?? 'gzip';
      const file = join(work, 'layer.blob');
      const layer = await packTree(tree, file, codec);
      await this.remote.push(key, file, layer, codec);
      this.metrics.bytes.inc({ direction: 'up' }, layer.size);
      return { reference: this.remote.describe(key), ...layer };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  async list(): Promise<ListedEntry[]> {
    const entries = await this.store.list();
    return entries
      .map(({ path, record, lastUsed }) => listed(path, record, lastUsed))
      .sort((a, b) => a.tool.localeCompare(b.tool) || a.version.localeCompare(b.version, undefined, { numeric: true }) || a.arch.localeCompare(b.arch));
  }

  async gc(target: GcTarget): Promise<GcResult> {
    return collect(this.store, target, () => this.metrics.evictions.inc());
  }

  async close(): Promise<void> {
    await this.remote?.close();
  }

  /**
   * A write that failed because the disk is full, as one line that says so: tar reports it as
   * "Wrote only N of M bytes" (no errno), so the free space is looked at too.
   */
  private async explainFull(err: unknown, what: string): Promise<unknown> {
    const free = await freeBytes(this.options.dir).catch(() => undefined);
    const full = (err as NodeJS.ErrnoException | undefined)?.code === 'ENOSPC' || /No space left|Wrote only/i.test(String((err as Error | undefined)?.message)) || (free !== undefined && free < 1 << 20);
    if (!full) return diskError(err, what);
    return new BuildfleetError('environment', `cache: no space left on the disk of ${this.options.dir} while ${what} (${free ?? '?'} bytes free); free some with 'buildfleet cache gc --min-free SIZE'`, { cause: err });
  }

  private log(line: string): void {
    this.options.log?.(line);
  }
}

function listed(path: string, record: EntryRecord, lastUsed: Date): ListedEntry {
  const arch = path.slice(path.lastIndexOf('/') + 1);
  return {
    tool: record.tool,
    version: record.version,
    arch,
    libc: record.libc,
    path,
    size: record.diskBytes,
    files: record.files,
    lastUsed: lastUsed.toISOString(),
    source: record.source,
    ...(record.digest && { digest: record.digest }),
  };
}
