import { createHash } from 'node:crypto';
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { killAll } from './processes.js';

/**
 * Each node's dockerd puts its containers under one parent cgroup of its own, so the agent can
 * count running builds while dockerd hangs, and cleanup can kill a node's containers after its
 * runtime is gone.
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

/** Containers of the node with at least one live process (read from the pids controller, or v2's tree). */
export async function runningContainers(name: string): Promise<string[]> {
  const base = join(CGROUP_ROOT, 'pids');
  const top = (await readdir(base).then(() => true, () => false)) ? join(base, name) : join(CGROUP_ROOT, name);
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

export async function killCgroup(name: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const pids = new Set<number>();
    for (const dir of await cgroupDirs(name)) {
      const procs = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const line of procs.split('\n')) if (line.trim()) pids.add(Number(line));
    }
    if (pids.size === 0) break;
    await killAll([...pids]);
  }
  for (const dir of await cgroupDirs(name)) await rmdir(dir).catch(() => {});
}

