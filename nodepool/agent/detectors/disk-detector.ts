import { readFile, statfs } from 'node:fs/promises';
import type { DetectorSink } from '../problems.js';
import { DiskWindow, SaturationCondition, parseDiskstats, type IoBudget, type SaturationThresholds } from './disk-signals.js';

/** One disk to watch: its name in conditions and metrics (runtime, workload), its block device in diskstats, where it is mounted, its I/O budget if it has one. */
export type WatchedDisk = { name: string; device: string; mountPoint: string; budget?: IoBudget };

export type DiskDetectorOptions = {
  disks: readonly WatchedDisk[];
  thresholds: SaturationThresholds;
  windowMs: number;
  /** /proc/diskstats; a test gives a file of its own. */
  diskstatsPath?: string;
};

/** The condition of a disk named `runtime`: RuntimeDiskSaturated. */
export function diskSaturatedCondition(disk: string): string {
  return `${disk.charAt(0).toUpperCase()}${disk.slice(1)}DiskSaturated`;
}

/**
 * Disk saturation per disk, each on its own device: every sample reads diskstats and statfs,
 * reports space and (once the window holds two samples) load as observations, and a change of
 * the disk's Saturated condition as a problem and a `disk-saturated` / `disk-calm` event.
 */
export class DiskSaturationDetector {
  private readonly disks: Array<WatchedDisk & { window: DiskWindow; condition: SaturationCondition }>;
  private readonly diskstatsPath: string;

  constructor(
    options: DiskDetectorOptions,
    private readonly sink: DetectorSink,
  ) {
    this.diskstatsPath = options.diskstatsPath ?? '/proc/diskstats';
    this.disks = options.disks.map((disk) => ({ ...disk, window: new DiskWindow(options.windowMs), condition: new SaturationCondition(options.thresholds) }));
  }

  async sample(): Promise<void> {
    const stats = parseDiskstats(await readFile(this.diskstatsPath, 'utf8'));
    const atMs = performance.now();
    for (const disk of this.disks) {
      const counters = stats.get(disk.device);
      if (!counters) continue;
      disk.window.add({ ...counters, atMs });
      const space = await readSpace(disk.mountPoint);
      this.sink.observe({ kind: 'disk-space', disk: disk.name, freeBytes: space.freeBytes, freeInodes: space.freeInodes });
      // A disk at its budget is as busy as one that is never idle: the throttle hides its queue.
      const busy = disk.window.utilization;
      const utilization = busy === undefined || !disk.budget ? busy : Math.max(busy, disk.window.budgetShare(disk.budget) ?? 0);
      const queueDepth = disk.window.queueDepth;
      if (utilization === undefined || queueDepth === undefined) continue;
      const { condition } = disk;
      const changed = condition.update({
        utilization,
        queueDepth,
        freeBytesRatio: space.totalBytes ? space.freeBytes / space.totalBytes : 1,
        freeInodesRatio: space.totalInodes ? space.freeInodes / space.totalInodes : 1,
      });
      this.sink.observe({ kind: 'disk-load', disk: disk.name, utilization, queueDepth, saturated: condition.saturated });
      if (!changed) continue;
      const message = condition.saturated ? condition.message : `utilisation ${(utilization * 100).toFixed(0)}%, queue depth ${queueDepth.toFixed(1)}: below the clear thresholds`;
      this.sink.problem({ type: diskSaturatedCondition(disk.name), present: condition.saturated, reason: condition.reason, message });
      this.sink.event(condition.saturated ? 'disk-saturated' : 'disk-calm', { disk: disk.name, reason: condition.message });
    }
  }
}

type SpaceReading = { totalBytes: number; freeBytes: number; totalInodes: number; freeInodes: number };

async function readSpace(mountPoint: string): Promise<SpaceReading> {
  const stats = await statfs(mountPoint);
  return { totalBytes: stats.blocks * stats.bsize, freeBytes: stats.bavail * stats.bsize, totalInodes: stats.files, freeInodes: stats.ffree };
}
