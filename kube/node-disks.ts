import { readFile, stat } from 'node:fs/promises';
import type { WatchedDisk } from '../nodepool/agent/detectors/disk-detector.js';

/**
 * Which block device holds a mount point, by name as /proc/diskstats knows it: the agent in a
 * pod sees the node's disks only as hostPath mounts, so it matches the mount's device number
 * (stat) against diskstats' major and minor columns instead of reading the host's mount table.
 */

/** Linux's dev_t encoding (glibc's gnu_dev_major / gnu_dev_minor). */
export function majorMinor(dev: number): { major: number; minor: number } {
  const value = BigInt(dev);
  const major = Number(((value >> 8n) & 0xfffn) | ((value >> 32n) & ~0xfffn));
  const minor = Number((value & 0xffn) | ((value >> 12n) & ~0xffn));
  return { major, minor };
}

/** Pure: the device named in diskstats with this major:minor, if any. */
export function deviceNamed(diskstats: string, id: { major: number; minor: number }): string | undefined {
  for (const line of diskstats.split('\n')) {
    const [major, minor, name] = line.trim().split(/\s+/);
    if (Number(major) === id.major && Number(minor) === id.minor && name) return name;
  }
  return undefined;
}

/** The disks whose mount point exists and whose device diskstats lists; the others are returned as `missing` with why. */
export async function watchedDisks(mounts: Record<string, string>, diskstatsPath: string): Promise<{ disks: WatchedDisk[]; missing: string[] }> {
  const diskstats = await readFile(diskstatsPath, 'utf8');
  const disks: WatchedDisk[] = [];
  const missing: string[] = [];
  for (const [name, mountPoint] of Object.entries(mounts)) {
    const info = await stat(mountPoint).catch(() => undefined);
    const device = info && deviceNamed(diskstats, majorMinor(info.dev));
    if (device) disks.push({ name, device, mountPoint });
    else missing.push(`${name} (${mountPoint}: ${info ? 'its device is not in diskstats' : 'not mounted'})`);
  }
  return { disks, missing };
}
