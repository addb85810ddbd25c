import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../imagebuilder/package-root.js';
import type { PoolManager } from '../nodepool/pool.js';

/**
 * What benchmarks need to run buildfleet as a user does. The tests reuse it (test/ may import
 * bench/, never the reverse).
 */

/** The CLI's node arguments: the tsc build when there is one (as users run it), else the sources through tsx. */
export function userCliCommand(): string[] {
  const built = join(packageRoot, 'dist', 'cli', 'main.cjs');
  return existsSync(built) ? [built] : ['--import', 'tsx', join(packageRoot, 'cli', 'main.cts')];
}

/** A fresh directory under $TMPDIR and the function that removes it. */
export async function tempDir(prefix = 'buildfleet-test-'): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** `--NAME N` from the command line, else fallback. */
export function numberArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** With `--help` on the command line: prints usage and exits 0, before anything starts. */
export function exitOnHelp(usage: string): void {
  if (!process.argv.includes('--help')) return;
  process.stdout.write(usage + '\n');
  process.exit(0);
}

/** A benchmark's clean-up, also after a failure: every pool of its own state dir deleted (nodes, disks, daemons). */
export async function deleteEveryPool(manager: PoolManager | undefined): Promise<void> {
  if (!manager) return;
  for (const pool of await manager.store.listPools().catch(() => [] as string[])) await manager.delete(pool).catch(() => {});
}
