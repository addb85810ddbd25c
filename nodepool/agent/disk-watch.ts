import { basename } from 'node:path';
import type { NodeRecord } from '../state/store.js';
import type { AgentMetrics } from './metrics.js';
import { DiskWindow, SaturationCondition, readDiskstats, readSpace } from './disk-monitor.js';

type Role = 'runtime' | 'workload';

/** Samples both of a node's disks, each on its own device, and keeps each one's Saturated condition. */
export class DiskMonitor {
  private readonly disks: Array<{ role: Role; device: string; mountPoint: string; window: DiskWindow; condition: SaturationCondition }>;

  constructor(
    private readonly node: NodeRecord,
    private readonly metrics: AgentMetrics,
    private readonly onChange: (disk: Role, saturated: boolean, reason: string) => void,
  ) {
    const s = node.spec.saturation;
    this.disks = (['runtime', 'workload'] as const).map((role) => ({
      role,
      device: basename(node.disks[role].loopDevice ?? ''),
      mountPoint: node.disks[role].mountPoint,
      window: new DiskWindow(s.windowSeconds * 1000),
      condition: new SaturationCondition(s),
    }));
  }

  async sample(): Promise<void> {
    const stats = await readDiskstats();
    const atMs = performance.now();
    for (const disk of this.disks) {
      const counters = stats.get(disk.device);
      if (!counters) continue;
      disk.window.add({ ...counters, atMs });
      const space = await readSpace(disk.mountPoint);
      const labels = { node: this.node.name, disk: disk.role };
      this.metrics.diskFreeBytes.set(labels, space.freeBytes);
      this.metrics.diskFreeInodes.set(labels, space.freeInodes);
      const utilization = disk.window.utilization;
      const queueDepth = disk.window.queueDepth;
      if (utilization === undefined || queueDepth === undefined) continue;
      this.metrics.diskUtilization.set(labels, utilization);
      this.metrics.diskQueueDepth.set(labels, queueDepth);
      const changed = disk.condition.update({
        utilization,
        queueDepth,
        freeBytesRatio: space.totalBytes ? space.freeBytes / space.totalBytes : 1,
        freeInodesRatio: space.totalInodes ? space.freeInodes / space.totalInodes : 1,
      });
      this.metrics.diskSaturated.set(labels, disk.condition.saturated ? 1 : 0);
      if (changed) this.onChange(disk.role, disk.condition.saturated, disk.condition.reason);
    }
  }
}
