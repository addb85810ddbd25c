import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { killAll } from './processes.js';

/**
 * Each node's dockerd puts its containers under one parent cgroup of its own, so the agent can
 * count running builds while dockerd hangs, and cleanup can kill a node's containers after its
 * runtime is gone. The node's own processes (agent, containerd, dockerd, shims) live in a second
 * cgroup, joined by the agent before it starts anything: cleanup kills exactly the processes a
 * node started, whatever their command lines say, and no others.
 */

const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * The parent cgroup of a node's containers (dockerd --cgroup-parent). Cgroups are host-wide:
 * a hash of the node dir keeps two state dirs with a pool of the same name apart.
 */
export function nodeCgroupName(nodeDir: string): string {
  const [pool, , id] = nodeDir.split('/').slice(-3);
  return `buildfleet-${pool}-${id}-${createHash('sha256').update(nodeDir).digest('hex').slice(0, 8)}`;
}

/** The cgroup of the node's agent and everything it starts (its daemons and their shims). */
export function nodeDaemonsCgroupName(nodeDir: string): string {
  return `${nodeCgroupName(nodeDir)}-daemons`;
}

/** Where a process is put to be found again: the pids controller (v1), else the unified tree (v2). */
async function trackingDir(name: string): Promise<string> {
  const pids = join(CGROUP_ROOT, 'pids');
  return (await readdir(pids).then(() => true, () => false)) ? join(pids, name) : join(CGROUP_ROOT, name);
}

/** Moves a process (and so every process it starts from then on) into the named cgroup. */
export async function joinCgroup(name: string, pid: number): Promise<void> {
  const dir = await trackingDir(name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'cgroup.procs'), `${pid}\n`);
}

/** Whether pid is a member of the named cgroup (or one below it): a pidfile's pid is trusted only then. */
export async function inCgroup(name: string, pid: number): Promise<boolean> {
  const lines = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
  return lines.split('\n').some((line) => {
    const path = line.split(':')[2] ?? '';
    return path === `/${name}` || path.startsWith(`/${name}/`);
  });
}

/** Containers of the node with at least one live process (read from the pids controller, or v2's tree). */
export async function runningContainers(name: string): Promise<string[]> {
  const top = await trackingDir(name);
  const running: string[] = [];
  for (const entry of await readdir(top, { withFileTypes: true }).catch(() => [])) {
    if (!entry.isDirectory()) continue;
    const procs = await readFile(join(top, entry.name, 'cgroup.procs'), 'utf8').catch(() => '');
    if (procs.trim()) running.push(entry.name);
  }
  return running;
}

/** Every cgroup dir named `name` under each v1 controller (and v2's unified tree), deepest first. */
async function cgroupDirs(name: string): Promise<string[]> {
  const dirs: string[] = [];
  for (const controller of await readdir(CGROUP_ROOT).catch(() => [] as string[])) {
    const top = join(CGROUP_ROOT, controller, name);
    const walk = async (dir: string): Promise<boolean> => {
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => undefined);
      if (!entries) return false;
      for (const entry of entries) if (entry.isDirectory()) await walk(join(dir, entry.name));
      dirs.push(dir);
      return true;
    };
    await walk(top);
  }
  return dirs;
}

/** The node's cgroup in the v1 blkio controller, where a disk budget binds its members (absent under cgroup v2). */
export function blkioCgroupDir(name: string): string {
  return join(CGROUP_ROOT, 'blkio', name);
}

/** A block device's blkio throttles, bytes or operations per second; 0 = no limit. */
export type DeviceLimits = { device: string; readBytesPerSecond: number; writeBytesPerSecond: number; iops: number };

const THROTTLE_FILES = [
  ['blkio.throttle.read_bps_device', 'readBytesPerSecond'],
  ['blkio.throttle.write_bps_device', 'writeBytesPerSecond'],
  ['blkio.throttle.read_iops_device', 'iops'],
  ['blkio.throttle.write_iops_device', 'iops'],
] as const;

/**
 * Sets a device's throttles in one v1 blkio cgroup dir (0 removes a limit). They bind only the
 * cgroup's own members: v1 throttling is flat, a parent's limits do not reach its children.
 */
export async function writeBlkioLimits(dir: string, limits: DeviceLimits): Promise<void> {
  for (const [file, key] of THROTTLE_FILES) {
    const value = limits[key];
    await writeFile(join(dir, file), `${limits.device} ${value}`).catch((err: Error) => {
      // Removing a limit that was never set fails with ENODEV on some kernels: nothing to remove.
      if (value) throw err;
    });
  }
}

/** A device's throttles as set in one blkio cgroup dir (zeros where none is set). */
export async function readBlkioLimits(dir: string, device: string): Promise<DeviceLimits> {
  const limits: DeviceLimits = { device, readBytesPerSecond: 0, writeBytesPerSecond: 0, iops: 0 };
  for (const [file, key] of THROTTLE_FILES) {
    const text = await readFile(join(dir, file), 'utf8').catch(() => '');
    const line = text.split('\n').find((entry) => entry.split(' ')[0] === device);
    if (line) limits[key] = Math.max(limits[key], Number(line.split(' ')[1]));
  }
  return limits;
}

/** Creates the named blkio cgroup with these limits, then moves pid into it (its children follow). */
export async function joinBlkioCgroup(name: string, pid: number, limits: DeviceLimits[]): Promise<void> {
  const dir = blkioCgroupDir(name);
  await mkdir(dir, { recursive: true });
  for (const device of limits) await writeBlkioLimits(dir, device);
  await writeFile(join(dir, 'cgroup.procs'), `${pid}\n`);
}

/** The blkio cgroup dirs of the node's containers that have a live process (one per running container). */
export async function runningContainerBlkioDirs(name: string): Promise<string[]> {
  const top = blkioCgroupDir(name);
  const dirs: string[] = [];
  for (const entry of await readdir(top, { withFileTypes: true }).catch(() => [])) {
    if (!entry.isDirectory()) continue;
    const procs = await readFile(join(top, entry.name, 'cgroup.procs'), 'utf8').catch(() => '');
    if (procs.trim()) dirs.push(join(top, entry.name));
  }
  return dirs;
}

/** Kills every process in the named cgroup and below, then removes the cgroup; returns how many it killed. */
export async function killCgroup(name: string): Promise<number> {
  const killed = new Set<number>();
  for (let round = 0; round < 5; round++) {
    const pids = new Set<number>();
    for (const dir of await cgroupDirs(name)) {
      const procs = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const line of procs.split('\n')) if (line.trim()) pids.add(Number(line));
    }
    if (pids.size === 0) break;
    for (const pid of pids) killed.add(pid);
    await killAll([...pids]);
  }
  for (const dir of await cgroupDirs(name)) await removeCgroupDir(dir);
  return killed.size;
}

/**
 * rmdir of an emptied cgroup. The kernel may still answer EBUSY for a moment after the last member
 * left, so an empty one is tried again for up to a second. One that still lists members (a killed
 * process nobody reaped: PID 1 here does not reap orphans) cannot go now: it is left at once for
 * the pool's sweep (sweepNodeCgroups) rather than waited for.
 */
async function removeCgroupDir(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || attempt >= 10) return;
      const members = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      if (members.trim() !== '') return;
      await sleep(100);
    }
  }
}

/** Every cgroup dir on the host, under any controller, whose name starts with prefix. */
async function cgroupsNamed(prefix: string): Promise<string[]> {
  const found: string[] = [];
  for (const controller of await readdir(CGROUP_ROOT).catch(() => [] as string[])) {
    for (const name of await readdir(join(CGROUP_ROOT, controller)).catch(() => [] as string[])) {
      if (name.startsWith(prefix)) found.push(join(CGROUP_ROOT, controller, name));
    }
  }
  return found;
}

const NODE_CGROUP = /^buildfleet-(.+)-(n\d+)-[0-9a-f]{8}(?:-daemons)?$/;

/**
 * Node cgroups on the host that belong to a node dir at or below dir (a state dir, a pool dir or
 * a node dir), whether or not the node dir still exists: the name carries pool and node id, and
 * its hash proves which state dir it came from.
 */
export async function nodeCgroupsBelow(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const path of await cgroupsNamed('buildfleet-')) {
    const name = path.split('/').pop()!;
    const [, pool, id] = NODE_CGROUP.exec(name) ?? [];
    if (!pool || !id) continue;
    const candidates = [dir, join(dir, 'nodes', id), join(dir, 'pools', pool, 'nodes', id)];
    if (candidates.some((nodeDir) => name === nodeCgroupName(nodeDir) || name === nodeDaemonsCgroupName(nodeDir))) found.push(path);
  }
  return found;
}

/**
 * The cgroups of a pool's nodes that are still on the host after the nodes were deleted (a removal
 * that lost its race with a zombie): killed empty and removed. Found by name, then proven this
 * state dir's by the node dir's hash in the name, so a pool of the same name elsewhere is left alone.
 */
export async function sweepNodeCgroups(poolDir: string): Promise<number> {
  const names = new Set((await nodeCgroupsBelow(poolDir)).map((path) => path.split('/').pop()!));
  let killed = 0;
  for (const name of names) killed += await killCgroup(name);
  return killed;
}
