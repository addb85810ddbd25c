import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { readNodeRecord } from '../state/store.js';
import type { CacheSpec } from '../pool-spec/pool-spec.js';
import type { Exporter } from './exporter.js';
import type { EventFields, Observation } from './problems.js';

/** What the agent asks of the toolchain cache: its gc (cache/gc.ts), as far as the agent reads the result. */
export type ToolcacheCollect = (dir: string, target: { maxSize: number; minFree: number }) => Promise<{ removed: Array<{ path: string; size: number }>; skippedInUse: string[]; freeAfter: number }>;

/**
 * Pure: the gc target when the workload disk has less than `minFreeRatio` of its space free
 * (undefined while it has enough): evict least recently used entries until that share is free
 * again, and down to the cache's size limit.
 */
export function toolcacheGcTarget(cache: Pick<CacheSpec, 'maxSize' | 'minFreeRatio'>, space: { freeBytes: number; totalBytes: number }): { maxSize: number; minFree: number } | undefined {
  const minFree = Math.ceil(cache.minFreeRatio * space.totalBytes);
  return space.freeBytes < minFree ? { maxSize: cache.maxSize, minFree } : undefined;
}

/**
 * The agent's hand on the toolchain cache of a node (spec `cache:`): it watches the workload
 * disk's free space, which the disk detector observes every sample, and when it falls below the
 * cache's `minFreeRatio` runs the cache's gc (one at a time). It sits among the exporters because
 * observations reach it there; it publishes nothing but its `toolcache-gc` events. The node's
 * record is read at each low-space sample, so settings `pool apply` rewrote apply at once.
 */
export class ToolcacheGc implements Exporter {
  private running = false;

  constructor(
    private readonly options: {
      nodeDir: string;
      workloadMount: string;
      event: (name: string, fields: EventFields) => void;
      /** The cache's gc; loaded on first use (a node without `cache:` never loads the cache). */
      collect?: ToolcacheCollect;
    },
  ) {}

  observe(observation: Observation): void {
    if (observation.kind !== 'disk-space' || observation.disk !== 'workload' || this.running) return;
    this.running = true;
    void this.check(observation.freeBytes).finally(() => {
      this.running = false;
    });
  }

  private async check(freeBytes: number): Promise<void> {
    try {
      const { cache } = (await readNodeRecord(this.options.nodeDir)).spec;
      if (!cache) return;
      const dir = join(this.options.workloadMount, cache.dir);
      const fs = await statfs(this.options.workloadMount);
      const target = toolcacheGcTarget(cache, { freeBytes, totalBytes: fs.blocks * fs.bsize });
      if (!target) return;
      const result = await (this.options.collect ?? collectWithCache)(dir, target);
      if (result.removed.length > 0 || result.skippedInUse.length > 0) {
        this.options.event('toolcache-gc', { removed: result.removed.map((entry) => entry.path), freedBytes: result.removed.reduce((sum, entry) => sum + entry.size, 0), keptInUse: result.skippedInUse, freeAfter: result.freeAfter, minFree: target.minFree });
      }
    } catch (err) {
      this.options.event('toolcache-gc-failed', { error: (err as Error).message.split('\n')[0] });
    }
  }
}

async function collectWithCache(dir: string, target: { maxSize: number; minFree: number }): ReturnType<ToolcacheCollect> {
  const { ToolchainCache } = await import('../../cache/cache.js');
  const cache = new ToolchainCache({ dir });
  try {
    return await cache.gc(target);
  } finally {
    await cache.close();
  }
}
