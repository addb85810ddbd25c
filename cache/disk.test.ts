import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { execa } from 'execa';
import { isBuildfleetError } from '../imagebuilder/errors.js';
import type { RegistryServer } from '../nodepool/daemons/index.js';
import { startRegistry, tempDir } from '../test/helpers/real.js';
import { ToolchainCache } from './cache.js';
import { freeBytes } from './gc.js';
import { toolchainKey } from './key.js';

/**
 * The cache on a small workload disk of its own (a loop-mounted ext4 file; needs root, as CI
 * is): gc keeps the most recently used entries, never one in use, and a full disk fails a get
 * with one line and nothing published.
 */

let root: { path: string; remove(): Promise<void> };
let mountPoint: string;
let mounted = false;
let registry: RegistryServer | undefined;
const caches: ToolchainCache[] = [];

before(async () => {
  root = await tempDir('buildfleet-cache-disk-');
  const image = join(root.path, 'disk.img');
  mountPoint = join(root.path, 'mnt');
  await mkdir(mountPoint);
  await execa('truncate', ['-s', '16M', image]);
  await execa('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
  await execa('mount', ['-o', 'loop', image, mountPoint]);
  mounted = true;
  registry = await startRegistry();
});
after(async () => {
  await Promise.all(caches.map((cache) => cache.close()));
  await registry?.stop();
  if (mounted) await execa('umount', [mountPoint], { reject: false });
  await root?.remove();
});

function open(dir: string, installer?: string, withRegistry = false): ToolchainCache {
  const cache = new ToolchainCache({ dir, ...(installer && { installer }), ...(withRegistry && registry && { registry: `127.0.0.1:${registry.port}/toolchains` }) });
  caches.push(cache);
  return cache;
}

const sized = (mb: number) => `mkdir -p "$PREFIX/bin" && head -c ${Math.round(mb * 1000_000)} /dev/urandom > "$PREFIX/bin/$TOOL"`;

test('gc on a small disk removes the least recently used entries and keeps those in use', { timeout: 60_000 }, async () => {
  const dir = join(mountPoint, 'lru');
  const cache = open(dir, sized(2.5));
  const keys = ['a', 'b', 'c', 'd'].map((tool) => toolchainKey(tool, '1.0'));
  for (const key of keys) {
    await cache.get(key);
    await sleep(15);
  }
  assert.equal((await cache.get(keys[0]!)).source, 'local', 'a used again: now the most recent');

  const result = await cache.gc({ maxSize: 5_500_000 });
  assert.deepEqual(result.removed.map((r) => r.path.split('/').at(-3)), ['b', 'c']);
  assert.deepEqual((await cache.list()).map((e) => e.tool), ['a', 'd']);
  assert.ok(result.sizeAfter <= 5_500_000);
  assert.equal(existsSync(join(dir, 'b')) && (await readdir(join(dir, 'b', '1.0'))).length > 0, false, 'no marker, tree or file list of b left');

  // d is being fetched or installed again by someone (its lock is held): gc leaves it.
  const release = await cache.store.tryLock(keys[3]!);
  assert.ok(release);
  try {
    const busy = await cache.gc({ maxSize: 0 });
    assert.deepEqual(busy.removed.map((r) => r.path.split('/').at(-3)), ['a']);
    assert.equal(busy.skippedInUse.length, 1);
    assert.deepEqual((await cache.list()).map((e) => e.tool), ['d']);
  } finally {
    await release!();
  }

  // Free space as the target: the disk needs room for the next big toolchain.
  for (const key of keys.slice(0, 3)) await cache.get(key);
  const free = await freeBytes(dir);
  const byFree = await cache.gc({ minFree: free + 3_500_000 });
  assert.equal(byFree.removed.length, 2, 'two 2.5 MB entries make 3.5 MB free');
  assert.deepEqual(byFree.removed.map((r) => r.path.split('/').at(-3)), ['d', 'a']);
  assert.ok(byFree.freeAfter >= free + 3_500_000);
});

test('a full disk: one clear line, nothing published, no work left behind', { timeout: 60_000 }, async () => {
  const dir = join(mountPoint, 'full');
  const big = open(dir, sized(20));
  await assert.rejects(big.get(toolchainKey('huge', '1.0')), (err) => isBuildfleetError(err) && /installer for huge 1\.0 failed with exit code 1: .*No space left on device/.test(err.message) && !err.message.includes('\n'));
  assert.equal(existsSync(join(dir, 'huge', '1.0', 'x64.complete')), false);
  assert.deepEqual(await readdir(join(dir, '.buildfleet', 'tmp')), []);

  // Another node made it where there was room; here the download does not fit.
  const elsewhere = await tempDir('buildfleet-cache-roomy-');
  try {
    await open(elsewhere.path, sized(12), true).get(toolchainKey('wide', '1.0'));
  } finally {
    await elsewhere.remove();
  }
  const pulling = open(dir, undefined, true);
  await assert.rejects(pulling.get(toolchainKey('wide', '1.0')), (err) => isBuildfleetError(err) && err.kind === 'environment' && /No space left on device|no space left/i.test(err.message) && !err.message.includes('\n'));
  assert.equal(existsSync(join(dir, 'wide', '1.0', 'x64.complete')), false);
  assert.equal(existsSync(join(dir, 'wide', '1.0', 'x64')), false);
  assert.deepEqual(await readdir(join(dir, '.buildfleet', 'tmp')), []);
});
