import { statfs } from 'node:fs/promises';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { LocalEntry, LocalStore } from './store.js';

/** Down to a total size of the entries, or up to free space on the cache's disk (or both). */
export type GcTarget = { maxSize?: number; minFree?: number };

export type GcCandidate = { path: string; size: number; lastUsed: number };

export type GcResult = {
  removed: Array<{ path: string; size: number; lastUsed: string }>;
  /** Entries the plan wanted gone but that were in use (their key's lock was held). */
  skippedInUse: string[];
  sizeBefore: number;
  sizeAfter: number;
  freeAfter: number;
};

/**
 * The entries to remove, least recently used first, until the entries total at most `maxSize`
 * and the disk has at least `minFree` free (free space grows by each entry's size). Pure.
 */
export function planEviction(entries: GcCandidate[], target: GcTarget, free: number): GcCandidate[] {
  let total = entries.reduce((sum, entry) => sum + entry.size, 0);
  let available = free;
  const plan: GcCandidate[] = [];
  for (const entry of [...entries].sort((a, b) => a.lastUsed - b.lastUsed || a.path.localeCompare(b.path))) {
    const tooBig = target.maxSize !== undefined && total > target.maxSize;
    const tooFull = target.minFree !== undefined && available < target.minFree;
    if (!tooBig && !tooFull) break;
    plan.push(entry);
    total -= entry.size;
    available += entry.size;
  }
  return plan;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4 };

/** "500M", "2GiB", "10gb", "1048576" -> bytes (K, M, G, T alone are binary, as in `df -h`). */
export function parseSize(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new BuildfleetError('usage', `${flag} must be a size such as 500M, 2G or 1073741824, not ${JSON.stringify(text)}`);
  return Math.floor(Number(match[1]) * unit);
}

export async function freeBytes(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return stats.bavail * stats.bsize;
}

/** Runs the plan: each entry is removed under its key's lock; an entry whose lock is held is in use and stays. */
export async function collect(store: LocalStore, target: GcTarget, onRemoved?: (entry: LocalEntry) => void): Promise<GcResult> {
  if (target.maxSize === undefined && target.minFree === undefined) throw new BuildfleetError('usage', 'cache gc needs --max-size or --min-free');
  await store.sweep();
  const entries = await store.list();
  const byPath = new Map(entries.map((entry) => [entry.path, entry]));
  const sizeBefore = entries.reduce((sum, entry) => sum + entry.record.diskBytes, 0);
  const plan = planEviction(
    entries.map((entry) => ({ path: entry.path, size: entry.record.diskBytes, lastUsed: entry.lastUsed.getTime() })),
    target,
    await freeBytes(store.dir),
  );
  const result: GcResult = { removed: [], skippedInUse: [], sizeBefore, sizeAfter: sizeBefore, freeAfter: 0 };
  for (const candidate of plan) {
    const entry = byPath.get(candidate.path)!;
    const release = await store.tryLock(entry.record);
    if (!release) {
      result.skippedInUse.push(entry.path);
      continue;
    }
    try {
      await store.discard(entry.record);
    } finally {
      await release();
    }
    result.removed.push({ path: entry.path, size: candidate.size, lastUsed: entry.lastUsed.toISOString() });
    result.sizeAfter -= candidate.size;
    onRemoved?.(entry);
  }
  result.freeAfter = await freeBytes(store.dir);
  return result;
}
