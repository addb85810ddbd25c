import type { NodeRecord } from '../state/store.js';
import { blkioServiceBytes, joinBlkioCgroup, nodeCgroupName, readBlkioLimits, nodeDaemonsCgroupName, runningContainerBlkioDirs, writeBlkioLimits, type DeviceLimits } from './cgroups.js';
import { diskLimits } from './disks.js';

/**
 * A node disk's I/O budget binds every writer of the node, not only the host's. Under cgroup v1
 * blkio throttling is flat: the limits set on a loop device in the root cgroup (`disks.ts`) bind
 * the root's own members (host processes, the kernel's flusher threads) and no child cgroup. So
 * the budget is copied into each cgroup that writes: the node's daemons cgroup (agent,
 * containerd, dockerd, shims) gets it whole; the node's running containers share it, so that
 * N builds at once write no faster together than the disk allows: the ones moving bytes in equal
 * parts, an idle one the part it would get by starting (see partsOf). cgroup v2's io.max on the
 * containers' parent would be hierarchical and bind them as one; this is the v1 way.
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

/** A container as the keeper last saw it, per budgeted device (MAJ:MIN): bytes moved so far and looks in a row without a byte moved. */
export type SeenContainer = { bytes: Record<string, number>; quietLooks: Record<string, number> };

/**
 * A container counts as idle on a disk after this many looks without a byte moved there (1 s at
 * the keeper's 200 ms): a writer whose requests wait in the throttle, or that is between two
 * fsyncs, must not flip to idle and back, as each flip lends the others its part for a look.
 */
export const IDLE_AFTER_LOOKS = 5;

/**
 * How many ways a container's part of a budget is cut, pure. Containers that moved bytes lately
 * (and new ones, not yet seen) share it equally; an idle one gets what it would get by starting
 * now, a part beside the active ones. So the active together use the whole budget (the shares
 * work-conserve across idle builds), and one that starts writing is held at once, to one part
 * more than the budget until the next look.
 */
export function partsOf(active: boolean, activeCount: number): number {
  return active ? Math.max(1, activeCount) : activeCount + 1;
}

/** Each container's parts, pure, disk by disk: a container busy on the runtime disk only takes nothing from the workload disk's writers. */
export function containerParts(budgets: DiskBudget[], activeOn: Map<string, Set<string>>): Map<string, DiskBudget[]> {
  const activeCount = (device: string) => [...activeOn.values()].filter((devices) => devices.has(device)).length;
  return new Map([...activeOn].map(([dir, devices]) => [dir, budgets.map((budget) => shareOf(budget, partsOf(devices.has(budget.device), activeCount(budget.device))))]));
}

/**
 * Gives each running container of the node its part of every budget; returns how many run.
 * Parts go by what each container did on each disk in the last looks (`seen`). A part is
 * written only where the cgroup holds another: compared with the cgroup itself, not with what
 * was written last, as runc writes a new container's own limits after its process joined.
 */
export async function shareAmongContainers(nodeDir: string, budgets: DiskBudget[], seen: Map<string, SeenContainer>): Promise<number> {
  const dirs = await runningContainerBlkioDirs(nodeCgroupName(nodeDir));
  const devices = budgets.map((budget) => budget.device);
  const now = new Map<string, SeenContainer>();
  for (const dir of dirs) {
    const bytes = await blkioServiceBytes(dir, devices);
    const last = seen.get(dir);
    // Not seen before: active everywhere, until it shows otherwise.
    const quietLooks = Object.fromEntries(devices.map((device) => [device, !last ? 0 : bytes[device]! > (last.bytes[device] ?? 0) ? 0 : (last.quietLooks[device] ?? 0) + 1]));
    now.set(dir, { bytes, quietLooks });
  }
  const activeOn = new Map([...now].map(([dir, { quietLooks }]) => [dir, new Set(devices.filter((device) => quietLooks[device]! < IDLE_AFTER_LOOKS))]));
  for (const [dir, parts] of containerParts(budgets, activeOn)) {
    for (const part of parts) {
      const current = await readBlkioLimits(dir, part.device);
      if (current.readBytesPerSecond === part.readBytesPerSecond && current.writeBytesPerSecond === part.writeBytesPerSecond && current.iops === part.iops) continue;
      // A container that exits meanwhile takes its cgroup with it: nothing left to limit.
      await writeBlkioLimits(dir, part).catch(() => {});
    }
  }
  seen.clear();
  for (const [dir, state] of now) seen.set(dir, state);
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
 */
export class BudgetKeeper {
  private timer: NodeJS.Timeout | undefined;
  private readonly seen = new Map<string, SeenContainer>();
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
      await shareAmongContainers(this.nodeDir, this.budgets, this.seen);
    } catch {
      // A cgroup gone mid-read: the next tick sees the new set.
    } finally {
      this.running = false;
    }
  }
}
