import { open, mkdir, statfs, symlink } from 'node:fs/promises';
import { execa } from 'execa';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { DiskSpec } from '../pool-spec/pool-spec.js';
import type { DiskRecord } from '../state/store.js';
import { clearThrottle, setThrottle } from './disk-throttle.js';

/**
 * A simulated node disk: a sparse file, attached to its own loop device (direct I/O, so its
 * reads and writes show on that device in /proc/diskstats and under its blkio budget rather
 * than in the host's page cache), formatted ext4 and mounted.
 */

async function run(command: string, args: string[], what: string): Promise<string> {
  const result = await execa(command, args, { reject: false });
  if (result.exitCode !== 0) {
    throw new BuildfleetError('environment', `${what}: ${command} ${args.join(' ')} failed: ${(result.stderr || result.stdout).trim().split('\n').slice(-2).join(' | ')}`);
  }
  return result.stdout.trim();
}

/**
 * Creates, attaches, formats and mounts one disk; records its loop device as soon as it exists.
 * With `clone`, the disk is that file instead (a preloaded disk's copy-on-write clone, already
 * formatted and filled): disk.file becomes a symlink to it, so the node dir still names its disk.
 */
export async function createDisk(disk: DiskRecord, spec: DiskSpec, onAttached: (loopDevice: string) => Promise<void>, options: { clone?: string } = {}): Promise<DiskRecord> {
  if (options.clone) {
    await symlink(options.clone, disk.file);
  } else {
    const handle = await open(disk.file, 'wx');
    try {
      await handle.truncate(disk.sizeBytes);
    } finally {
      await handle.close();
    }
  }
  const loopDevice = await run('losetup', ['--find', '--show', '--direct-io=on', options.clone ?? disk.file], `${disk.role} disk`);
  await onAttached(loopDevice);
  if (spec.readBytesPerSecond || spec.writeBytesPerSecond || spec.iops) await setThrottle(loopDevice, spec);
  // Lazy init: the inode tables (and journal) are zeroed in the background, so mkfs takes milliseconds.
  if (!options.clone) {
    const journal = spec.journal ? [] : ['-O', '^has_journal'];
    await run('mkfs.ext4', ['-q', '-F', '-m', '0', ...journal, '-E', 'lazy_itable_init=1,lazy_journal_init=1', loopDevice], `${disk.role} disk`);
  }
  await mkdir(disk.mountPoint, { recursive: true });
  await run('mount', ['-o', 'noatime', loopDevice, disk.mountPoint], `${disk.role} disk`);
  return { ...disk, loopDevice };
}

/**
 * A single-disk node's workload "disk": a directory of the runtime disk bind-mounted where the
 * workload disk would be, so builds and the agent find it at the same place, on the same device
 * and under the same budget as the data-root.
 */
export async function bindWorkloadDir(runtime: DiskRecord, workload: DiskRecord): Promise<DiskRecord> {
  const source = `${runtime.mountPoint}/workload`;
  await mkdir(source, { recursive: true });
  await mkdir(workload.mountPoint, { recursive: true });
  await run('mount', ['--bind', source, workload.mountPoint], 'workload dir');
  return { ...workload, ...(runtime.loopDevice && { loopDevice: runtime.loopDevice }) };
}

/** Loop devices whose backing file lies under dir (found by path, so a crashed run's are found too). */
export async function loopDevicesBelow(dir: string): Promise<string[]> {
  const result = await execa('losetup', ['--list', '--json', '--output', 'NAME,BACK-FILE'], { reject: false });
  if (result.exitCode !== 0 || !result.stdout.trim()) return [];
  const parsed = JSON.parse(result.stdout) as { loopdevices?: Array<{ name: string; 'back-file'?: string | null }> };
  return (parsed.loopdevices ?? [])
    .filter((device) => {
      const file = (device['back-file'] ?? '').replace(/ \(deleted\)$/, '');
      return file === dir || file.startsWith(dir + '/');
    })
    .map((device) => device.name);
}

export async function detachLoopDevice(loopDevice: string): Promise<void> {
  await clearThrottle(loopDevice);
  await execa('losetup', ['--detach', loopDevice], { reject: false });
}

/** Free bytes for new disk files under dir (what an unprivileged user could get, like df). */
export async function freeBytes(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return stats.bavail * stats.bsize;
}
