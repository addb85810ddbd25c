import { lstatSync, readdirSync, type Stats } from 'node:fs';
import { join } from 'node:path';

/**
 * What a published entry looked like, file by file, taken right after its bytes were verified
 * (the blob's digest on a pull, the installer's output on an install). A later look compares
 * stats (type, size, mode, mtime) as git's index does: a file rewritten, truncated, removed or
 * replaced changes them. Content hashes per file are not kept: the content was verified as a
 * whole on arrival, and hashing every file again would cost a second read of the whole tree on
 * every fetch (see README, "Corrupt entries").
 */

/** [path relative to the entry, type, size, mode, mtimeMs]; type f(ile), d(irectory), l(ink). */
export type TreeFile = [path: string, type: 'f' | 'd' | 'l', size: number, mode: number, mtimeMs: number];

export type TreeSummary = { files: TreeFile[]; bytes: number; diskBytes: number };

/** Files checked on every local hit: all of a small entry; of a big one the largest and an even spread of the rest. */
export const CHECK_BUDGET = 512;
const CHECK_LARGEST = 128;

function typeOf(stats: Stats): TreeFile[1] | undefined {
  if (stats.isFile()) return 'f';
  if (stats.isDirectory()) return 'd';
  if (stats.isSymbolicLink()) return 'l';
  return undefined;
}

/** Walks `root` (synchronously: one syscall after another is what is fastest for many small files). */
export function walkTree(root: string): TreeSummary {
  const files: TreeFile[] = [];
  let bytes = 0;
  let diskBytes = 0;
  const seenInodes = new Set<number>();
  const visit = (dir: string, prefix: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = prefix ? `${prefix}/${name}` : name;
      const stats = lstatSync(join(dir, name));
      const type = typeOf(stats);
      if (!type) continue;
      files.push([path, type, type === 'd' ? 0 : stats.size, stats.mode, stats.mtimeMs]);
      // Hardlinked files take their blocks once.
      if (stats.nlink > 1 && type === 'f') {
        if (seenInodes.has(stats.ino)) continue;
        seenInodes.add(stats.ino);
      }
      if (type !== 'd') bytes += stats.size;
      diskBytes += stats.blocks * 512;
      if (type === 'd') visit(join(dir, name), path);
    }
  };
  visit(root, '');
  return { files, bytes, diskBytes };
}

/** The files a local hit checks (directories aside: adding a file to one changes its mtime, and adding is allowed). */
export function checkSet(files: TreeFile[], budget = CHECK_BUDGET): TreeFile[] {
  const candidates = files.filter((file) => file[1] !== 'd');
  if (candidates.length <= budget) return candidates;
  const bySize = [...candidates].sort((a, b) => b[2] - a[2]);
  const chosen = new Set(bySize.slice(0, CHECK_LARGEST));
  const rest = candidates.filter((file) => !chosen.has(file));
  const spread = budget - chosen.size;
  for (let i = 0; i < spread; i++) chosen.add(rest[Math.floor((i * rest.length) / spread)]!);
  return candidates.filter((file) => chosen.has(file));
}

/** The first file of `expected` that does not look as recorded under `root`, or undefined when all do. */
export function firstMismatch(root: string, expected: TreeFile[]): string | undefined {
  for (const [path, type, size, mode, mtimeMs] of expected) {
    let stats: Stats | undefined;
    try {
      stats = lstatSync(join(root, path), { throwIfNoEntry: false });
    } catch (err) {
      // ENOTDIR (a directory above replaced by a file), EACCES: not as recorded either way.
      return `${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
    }
    if (!stats) return `${path} is missing`;
    if (typeOf(stats) !== type) return `${path} changed type`;
    if (type === 'd') continue;
    if (stats.size !== size) return `${path} has ${stats.size} bytes, not ${size}`;
    if (stats.mode !== mode) return `${path} changed mode`;
    if (stats.mtimeMs !== mtimeMs) return `${path} was modified`;
  }
  return undefined;
}
