import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
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

/**
 * A benchmark's clean-up, run once: at the end (call it in `finally`), or on SIGINT or SIGTERM,
 * after which the process exits 128 + the signal's number. Without it an interrupted benchmark
 * died of the signal and left its pools (mounted disks, daemons, agents) and gigabytes of temp
 * files behind. `done()` removes the signal handlers and runs the clean-up if it has not run.
 */
export function cleanUpOnce(cleanUp: () => Promise<void>, log: (line: string) => void = () => {}): { done(): Promise<void> } {
  let running: Promise<void> | undefined;
  const run = () => (running ??= cleanUp());
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((signal) => {
    const handler = () => {
      log(`${signal}: stopping every node and daemon of the benchmark, removing its files`);
      void run()
        .catch((err: Error) => log(`clean-up: ${err.message}`))
        .finally(() => process.exit(128 + constants.signals[signal]));
    };
    process.once(signal, handler);
    return () => process.removeListener(signal, handler);
  });
  return {
    async done() {
      for (const remove of handlers) remove();
      await run();
    },
  };
}
