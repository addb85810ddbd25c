import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { makeScratchDir, ownedTempName, parseTempName, removeTemp } from '../../imagebuilder/transports/temp-files.js';
import type { PinnedImage } from '../state/store.js';
import { unmountBelow } from '../daemons/docker-engine.js';
import { loopDevicesBelow, detachLoopDevice } from './disks.js';

/**
 * Preloaded runtime disks, the local analogue of GKE's secondary boot disks: a runtime disk is
 * baked once per set of image digests (its data-root already holds the images), and each new
 * node's runtime disk is a copy-on-write clone of it, made in milliseconds. The clones need a
 * filesystem with reflinks: the store is an XFS filesystem (`reflink=1`) in a sparse file under
 * the state dir, loop-mounted at `<state>/disk-store` (this kernel has no device-mapper, so no
 * dm-snapshot; Docker's overlay2 refuses an overlay data-root, so a whole disk is cloned).
 *
 * Layout: `baked/KEY.img` (KEY from the image digests and the disk size, so pools with the same
 * images share one), `pools/POOL` (the KEY a pool's nodes start from: a baked disk that no pool
 * names any more is removed), `nodes/POOL/ID/runtime.img` (the clones).
 * A bake writes to an owned temp name and renames when whole, so a bake killed half-way leaves
 * no disk that a node could be cloned from (the next bake sweeps what dead owners left).
 */

/** Sparse: only what the baked disks and their clones' changes hold takes space. */
const STORE_BYTES = 1024 ** 4;

export function bakeKey(images: readonly PinnedImage[], runtimeDiskBytes: number): string {
  return createHash('sha256')
    .update(JSON.stringify({ digests: images.map((image) => image.pinned), runtimeDiskBytes }))
    .digest('hex')
    .slice(0, 16);
}

async function run(command: string, args: string[], what: string): Promise<string> {
  const result = await execa(command, args, { reject: false });
  if (result.exitCode !== 0) throw new BuildfleetError('environment', `${what}: ${command} ${args.join(' ')} failed: ${(result.stderr || result.stdout).trim().split('\n').slice(-2).join(' | ')}`);
  return result.stdout.trim();
}

async function isMountPoint(dir: string): Promise<boolean> {
  return (await execa('mountpoint', ['-q', dir], { reject: false })).exitCode === 0;
}

const BAKE_PREFIX = '.bake-';
const BAKE_MOUNT_PREFIX = '.bake-mnt-';

/** What a bake killed half-way left (its owner is gone): its mount, its loop device, its files. */
async function sweepDeadBakes(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const parsed = parseTempName(name);
    if (!parsed?.ownerGone || !parsed.prefix.startsWith(BAKE_PREFIX)) continue;
    const path = join(dir, name);
    await unmountBelow(path);
    for (const loop of await loopDevicesBelow(path)) await detachLoopDevice(loop);
    await rm(path, { recursive: true, force: true });
  }
}

const opening = new Map<string, Promise<DiskStore>>();

export class DiskStore {
  private constructor(
    readonly file: string,
    readonly root: string,
  ) {}

  /** Whether the state dir has a store mounted (nothing to release otherwise). */
  static mounted(stateRoot: string): Promise<boolean> {
    return isMountPoint(join(stateRoot, 'disk-store'));
  }

  /** The store of a state dir, made and mounted on first use (once per process at a time). */
  static open(stateRoot: string): Promise<DiskStore> {
    let store = opening.get(stateRoot);
    if (!store) {
      store = DiskStore.mount(stateRoot).finally(() => opening.delete(stateRoot));
      opening.set(stateRoot, store);
    }
    return store;
  }

  private static async mount(stateRoot: string): Promise<DiskStore> {
    const store = new DiskStore(join(stateRoot, 'disk-store.xfs'), join(stateRoot, 'disk-store'));
    if (await isMountPoint(store.root)) return store;
    await mkdir(store.root, { recursive: true });
    if (!existsSync(store.file)) {
      await run('sh', ['-c', 'command -v mkfs.xfs'], 'preloaded disks need mkfs.xfs (Debian package xfsprogs)');
      const temp = join(stateRoot, ownedTempName('.disk-store-'));
      const handle = await open(temp, 'wx');
      await handle.truncate(STORE_BYTES).finally(() => handle.close());
      await run('mkfs.xfs', ['-q', '-m', 'reflink=1', temp], 'the preloaded-disk store');
      await rename(temp, store.file);
    }
    await run('mount', ['-o', 'loop,noatime', store.file, store.root], 'the preloaded-disk store');
    for (const dir of ['baked', 'pools', 'nodes']) await mkdir(join(store.root, dir), { recursive: true });
    return store;
  }

  bakedPath(key: string): string {
    return join(this.root, 'baked', `${key}.img`);
  }

  nodeDisk(pool: string, id: string): string {
    return join(this.root, 'nodes', pool, id, 'runtime.img');
  }

  /**
   * The baked disk of these images, baked now when there is none: `fill` gets a fresh, mounted
   * ext4 disk of `sizeBytes` and must leave it holding the images. The pool's nodes start from it
   * from now on; the pool's older bake goes unless another pool still names it. Without a pool (a
   * bake ahead of the pool's first apply) it is kept until a pool names it or the store goes.
   */
  async bake(pool: string | undefined, key: string, sizeBytes: number, fill: (mountPoint: string, scratch: string) => Promise<void>): Promise<{ path: string; baked: boolean }> {
    const path = this.bakedPath(key);
    if (existsSync(path)) {
      if (pool) await this.assign(pool, key);
      return { path, baked: false };
    }
    const dir = join(this.root, 'baked');
    await sweepDeadBakes(dir);
    const temp = join(dir, ownedTempName(BAKE_PREFIX));
    const mountPoint = join(dir, ownedTempName(BAKE_MOUNT_PREFIX));
    // The filler's own files (a throwaway engine's root): short (unix socket paths), owned, so the
    // next run's sweep of the temp dir removes what a killed bake left there.
    const scratch = await makeScratchDir(tmpdir(), 'bake');
    let loopDevice: string | undefined;
    try {
      const handle = await open(temp, 'wx');
      await handle.truncate(sizeBytes).finally(() => handle.close());
      loopDevice = await run('losetup', ['--find', '--show', temp], 'bake');
      await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', 'lazy_itable_init=0,lazy_journal_init=0', loopDevice], 'bake');
      await mkdir(mountPoint, { recursive: true });
      await run('mount', ['-o', 'noatime', loopDevice, mountPoint], 'bake');
      await fill(mountPoint, scratch);
      // Strict: the disk must be whole and written back before it is renamed into place.
      await run('umount', [mountPoint], 'bake');
      await detachLoopDevice(loopDevice);
      loopDevice = undefined;
      await rename(temp, path);
    } finally {
      await execa('umount', ['--lazy', mountPoint], { reject: false });
      if (loopDevice) await detachLoopDevice(loopDevice);
      await rm(mountPoint, { recursive: true, force: true });
      await unmountBelow(scratch);
      await removeTemp(scratch);
      await rm(temp, { force: true });
    }
    if (pool) await this.assign(pool, key);
    return { path, baked: true };
  }

  /** A copy-on-write clone of a baked disk for one node (a reflink: no data is copied). */
  async clone(baked: string, pool: string, id: string): Promise<string> {
    const target = this.nodeDisk(pool, id);
    await mkdir(join(this.root, 'nodes', pool, id), { recursive: true });
    await run('cp', ['--reflink=always', baked, target], 'clone of the baked runtime disk');
    return target;
  }

  /** A node's clone and its loop device, if any (node cleanup, also after a crash). */
  async releaseNode(pool: string, id: string): Promise<number> {
    const dir = join(this.root, 'nodes', pool, id);
    const loops = await loopDevicesBelow(dir);
    for (const loop of loops) await detachLoopDevice(loop);
    await rm(dir, { recursive: true, force: true });
    return loops.length;
  }

  /** The pool is deleted: its clones go, and its baked disk unless another pool names it. */
  async releasePool(pool: string): Promise<number> {
    const dir = join(this.root, 'nodes', pool);
    const loops = await loopDevicesBelow(dir);
    for (const loop of loops) await detachLoopDevice(loop);
    await rm(dir, { recursive: true, force: true });
    await rm(join(this.root, 'pools', pool), { force: true });
    await this.prune();
    return loops.length;
  }

  private async assign(pool: string, key: string): Promise<void> {
    const record = join(this.root, 'pools', pool);
    const temp = join(this.root, 'pools', ownedTempName('.assign-'));
    await writeFile(temp, key);
    await rename(temp, record);
    await this.prune();
  }

  /** Removes the baked disks no pool names (a clone does not need its origin: reflinks share extents, not files). */
  private async prune(): Promise<void> {
    const pools = (await readdir(join(this.root, 'pools')).catch(() => [] as string[])).filter((name) => !name.startsWith('.'));
    const wanted = new Set(await Promise.all(pools.map(async (name) => (await readFile(join(this.root, 'pools', name), 'utf8').catch(() => '')).trim())));
    for (const name of await readdir(join(this.root, 'baked')).catch(() => [] as string[])) {
      if (name.endsWith('.img') && !wanted.has(name.slice(0, -'.img'.length))) await rm(join(this.root, 'baked', name), { force: true });
    }
  }

  /** Bytes the store's files take on the host (the sparse file's allocated blocks). */
  async allocatedBytes(): Promise<number> {
    return (await stat(this.file)).blocks * 512;
  }
}

/**
 * Unmounts and removes a state dir's store when no pool uses it any more (after the last such
 * pool's delete), so nothing stays mounted; `force` also when one does (a test's clean-up).
 */
export async function removeDiskStoreIfUnused(stateRoot: string, options: { force?: boolean } = {}): Promise<boolean> {
  const root = join(stateRoot, 'disk-store');
  if (!(await isMountPoint(root))) {
    await rm(join(stateRoot, 'disk-store.xfs'), { force: true });
    return false;
  }
  const inUse = [...(await readdir(join(root, 'nodes')).catch(() => [])), ...(await readdir(join(root, 'pools')).catch(() => []))];
  if (inUse.length > 0 && !options.force) return false;
  if (options.force) for (const loop of await loopDevicesBelow(join(root, 'nodes'))) await detachLoopDevice(loop);
  await run('umount', [root], 'the preloaded-disk store');
  for (const loop of await loopDevicesBelow(join(stateRoot, 'disk-store.xfs'))) await detachLoopDevice(loop);
  await rm(root, { recursive: true, force: true });
  await rm(join(stateRoot, 'disk-store.xfs'), { force: true });
  return true;
}
