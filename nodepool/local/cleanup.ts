import { readFile } from 'node:fs/promises';
import { mountsBelow, unmountBelow } from '../daemons/docker-engine.js';
import { detachLoopDevice, loopDevicesBelow } from './disks.js';
import { inCgroup, killCgroup, nodeCgroupName, nodeCgroupsBelow, nodeDaemonsCgroupName } from './cgroups.js';
import { isAlive, processesNaming } from './processes.js';

/**
 * Removes everything a node left on this host after a crash or a `kill -9` mid-create, found by
 * what belongs to the node rather than by what a state file says it made: the processes in the
 * node's cgroups (agent, containerd, dockerd, shims, containers), mounts below its dir, loop
 * devices backed by files below it. A process is never chosen by what its command line says.
 */

export type CleanupReport = { processes: number; mounts: number; loopDevices: number };

/** Processes first (they hold mounts), then mounts deepest first, then loop devices. */
export async function cleanupNode(nodeDir: string): Promise<CleanupReport> {
  const processes = (await killCgroup(nodeDaemonsCgroupName(nodeDir))) + (await killCgroup(nodeCgroupName(nodeDir)));
  return { processes, ...(await releaseDisksBelow(nodeDir)) };
}

/** Mounts and loop devices below dir (a node dir, or a pool dir after its nodes are gone). */
export async function releaseDisksBelow(dir: string): Promise<Omit<CleanupReport, 'processes'>> {
  const mounts = await unmountBelow(dir);
  const loops = await loopDevicesBelow(dir);
  for (const loop of loops) await detachLoopDevice(loop);
  return { mounts, loopDevices: loops.length };
}

/**
 * The pid in a node's pidfile, if it still is the node's process: a pid read from a file may
 * since have been reused by anything on the host, so it counts only from inside the node's cgroup.
 */
export async function nodeProcessFromPidfile(nodeDir: string, pidfile: string): Promise<number | undefined> {
  const pid = Number((await readFile(pidfile, 'utf8').catch(() => '')).trim());
  if (!(pid > 0) || !isAlive(pid)) return undefined;
  return (await inCgroup(nodeDaemonsCgroupName(nodeDir), pid)) ? pid : undefined;
}

/**
 * What is still alive or attached below dir: the leak check that tests use. It looks wider than
 * cleanup acts (any live process naming the dir), so a process that escaped the node's cgroups shows.
 */
export async function leftoversBelow(dir: string): Promise<{ processes: number[]; mounts: string[]; loopDevices: string[]; cgroups: string[] }> {
  const processes = (await processesNaming(dir)).filter(isAlive);
  return { processes, mounts: await mountsBelow(dir), loopDevices: await loopDevicesBelow(dir), cgroups: await nodeCgroupsBelow(dir) };
}
