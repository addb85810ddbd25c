import type { NodeRecord } from '../state/store.js';
import { joinBlkioCgroup, nodeCgroupName, nodeDaemonsCgroupName, readBlkioLimits, runningContainerBlkioDirs, writeBlkioLimits, type DeviceLimits } from './cgroups.js';
import { diskLimits } from './disk-throttle.js';

/**
 * A node disk's I/O budget binds every writer of the node, not only the host's. Under cgroup v1
 * blkio throttling is flat: the limits set on a loop device in the root cgroup (`disks.ts`) bind
 * the root's own members (host processes, the kernel's flusher threads) and no child cgroup. So
 * the budget is copied into each cgroup that writes: the node's daemons cgroup (agent,
 * containerd, dockerd, shims) gets it whole; the node's running containers share it in equal
 * parts, so that N builds at once write no faster together than the disk allows. Equal parts are
 * not work-conserving: an idle build keeps its part. cgroup v2's io.max on the containers'
 * parent would be hierarchical and bind them as one; this is the v1 way.
 */

/** A disk's budget with its device node, as the Docker API names a device (BlkioDeviceWriteBps). */
export type DiskBudget = DeviceLimits & { path: string };

/** The budgets of the node's disks that have one, read from their loop devices' root throttles. */
export async function nodeDiskBudgets(node: Pick<NodeRecord, 'disks'>): Promise<DiskBudget[]> {
  const budgets: DiskBudget[] = [];
  // One loop device per disk; a single-disk node names the same device twice.
  const devices = new Set(Object.values(node.disks).map((disk) => disk.loopDevice).filter((device): device is string => Boolean(device)));
  for (const path of devices) {
    const limits = await diskLimits(path).catch(() => undefined);
    if (limits && (limits.readBytesPerSecond || limits.writeBytesPerSecond || limits.iops)) budgets.push({ ...limits, path });
  }
  return budgets;
}

/** One writer's part of a budget shared by `writers`; never 0 where the budget has a limit (0 would mean none). */
export function shareOf<T extends DeviceLimits>(budget: T, writers: number): T {
  const part = (limit: number) => (limit ? Math.max(1, Math.floor(limit / Math.max(1, writers))) : 0);
  return { ...budget, readBytesPerSecond: part(budget.readBytesPerSecond), writeBytesPerSecond: part(budget.writeBytesPerSecond), iops: part(budget.iops) };
}

type ThrottleDevice = { Path: string; Rate: number };

/** The Docker API's per-container device limits for these budgets: the container is held from its first write. */
export function containerBlkioLimits(budgets: DiskBudget[]): {
  BlkioDeviceReadBps: ThrottleDevice[];
  BlkioDeviceWriteBps: ThrottleDevice[];
  BlkioDeviceReadIOps: ThrottleDevice[];
  BlkioDeviceWriteIOps: ThrottleDevice[];
} {
  const limit = (key: 'readBytesPerSecond' | 'writeBytesPerSecond' | 'iops') => budgets.filter((b) => b[key] > 0).map((b) => ({ Path: b.path, Rate: b[key] }));
  return { BlkioDeviceReadBps: limit('readBytesPerSecond'), BlkioDeviceWriteBps: limit('writeBytesPerSecond'), BlkioDeviceReadIOps: limit('iops'), BlkioDeviceWriteIOps: limit('iops') };
}

/** The budgets a container about to start gets: its part beside the node's running containers. */
export async function newContainerShare(nodeDir: string, budgets: DiskBudget[]): Promise<DiskBudget[]> {
  const running = (await runningContainerBlkioDirs(nodeCgroupName(nodeDir))).length;
  return budgets.map((budget) => shareOf(budget, running + 1));
}

/**
 * Gives each running container of the node an equal part of every budget; returns how many run.
 * A part is written only where the cgroup holds another: compared with the cgroup itself, not
 * with what was written last, as runc writes a new container's own limits after its process
 * joined. Equal parts, whatever each container does: a work-conserving split needs to know
 * which containers are writing, and v1's per-cgroup counters cannot tell (see the README).
 */
export async function shareAmongContainers(nodeDir: string, budgets: DiskBudget[]): Promise<number> {
  const dirs = await runningContainerBlkioDirs(nodeCgroupName(nodeDir));
  for (const dir of dirs) {
    for (const part of budgets.map((budget) => shareOf(budget, dirs.length))) {
      const current = await readBlkioLimits(dir, part.device);
      if (current.readBytesPerSecond === part.readBytesPerSecond && current.writeBytesPerSecond === part.writeBytesPerSecond && current.iops === part.iops) continue;
      // A container that exits meanwhile takes its cgroup with it: nothing left to limit.
      await writeBlkioLimits(dir, part).catch(() => {});
    }
  }
  return dirs.length;
}

/** Puts pid (the node's agent, before it starts its daemons) in the node's daemons blkio cgroup, with each disk's whole budget. */
export async function budgetNodeDaemons(nodeDir: string, pid: number, budgets: DiskBudget[]): Promise<void> {
  if (budgets.length === 0) return;
  await joinBlkioCgroup(nodeDaemonsCgroupName(nodeDir), pid, budgets);
}

/**
 * Keeps the node's containers' parts right as containers come and go, whoever started them
 * (jobs set their part at creation; a `docker run` on the node gets it within one interval).
 * The only one that changes parts after a container starts.
 */
export class BudgetKeeper {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly nodeDir: string,
    private readonly budgets: DiskBudget[],
    private readonly intervalMs = 200,
  ) {}

  start(): void {
    if (this.budgets.length === 0 || this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      await shareAmongContainers(this.nodeDir, this.budgets);
    } catch {
      // A cgroup gone mid-read: the next tick sees the new set.
    } finally {
      this.running = false;
    }
  }
}
