import { mountsBelow, unmountBelow } from '../../imagebuilder/daemons/docker-engine.js';
import { detachLoopDevice, loopDevicesBelow } from './disks.js';
import { killCgroup } from './cgroups.js';
import { isAlive, killAll, processesNaming } from './processes.js';

/**
 * Removes everything a node or pool left on this host, found by where it lives rather than by
 * what a state file says, so it works after a crash or a `kill -9` mid-create: processes whose
 * command line names the dir (agent, dockerd, containerd, shims), the node's containers (by
 * cgroup), mounts below the dir, loop devices backed by files below it.
 */

export type CleanupReport = { processes: number; mounts: number; loopDevices: number };

/**
 * Cleans up below `dir` (a node dir or a whole pool dir): processes first (they hold mounts),
 * then containers by cgroup, then mounts deepest first, then loop devices.
 */
export async function cleanupBelow(dir: string, cgroups: string[]): Promise<CleanupReport> {
  const report: CleanupReport = { processes: 0, mounts: 0, loopDevices: 0 };
  // Twice: an agent killed in the first round may have started a daemon in between.
  for (let round = 0; round < 2; round++) {
    const pids = await processesNaming(dir);
    report.processes += pids.length;
    await killAll(pids);
  }
  for (const cgroup of cgroups) await killCgroup(cgroup);
  report.mounts = await unmountBelow(dir);
  const loops = await loopDevicesBelow(dir);
  report.loopDevices = loops.length;
  for (const loop of loops) await detachLoopDevice(loop);
  return report;
}


/** What is still alive or attached below dir: the leak check tests and `doctor` use. */
export async function leftoversBelow(dir: string): Promise<{ processes: number[]; mounts: string[]; loopDevices: string[] }> {
  const processes = (await processesNaming(dir)).filter(isAlive);
  return { processes, mounts: await mountsBelow(dir), loopDevices: await loopDevicesBelow(dir) };
}
