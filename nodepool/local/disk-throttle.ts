import { readFile } from 'node:fs/promises';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { DiskSpec } from '../pool-spec/pool-spec.js';
import { readBlkioLimits, writeBlkioLimits, type DeviceLimits } from './cgroups.js';

/**
 * A disk's I/O budget on its loop device, apart from making disks (`disks.ts`, which runs
 * losetup, mkfs and mount through execa): the node agent reads budgets at every start and
 * loads only this.
 */

const BLKIO = '/sys/fs/cgroup/blkio';

/** A block device's MAJ:MIN, as blkio names it. */
export async function deviceNumbers(loopDevice: string): Promise<string> {
  const name = loopDevice.replace('/dev/', '');
  return (await readFile(`/sys/block/${name}/dev`, 'utf8')).trim();
}

/**
 * A disk's own I/O budget, like a cloud disk's limit (all loop files share one real disk
 * otherwise), set in the root blkio cgroup: it binds the host's processes and the kernel's
 * flusher threads (buffered writes are written back by them under cgroup v1). The node's own
 * processes and containers get it in their cgroups (`io-budget.ts`), reading it from here.
 */
export async function setThrottle(loopDevice: string, spec: Pick<DiskSpec, 'readBytesPerSecond' | 'writeBytesPerSecond' | 'iops'>): Promise<void> {
  const device = await deviceNumbers(loopDevice);
  await writeBlkioLimits(BLKIO, { device, readBytesPerSecond: spec.readBytesPerSecond, writeBytesPerSecond: spec.writeBytesPerSecond, iops: spec.iops }).catch((err: Error) => {
    throw new BuildfleetError('environment', `cannot set the I/O budget of ${loopDevice}: ${err.message}`);
  });
}

/** The budget set on a disk's loop device (zeros where none is). */
export async function diskLimits(loopDevice: string): Promise<DeviceLimits> {
  return readBlkioLimits(BLKIO, await deviceNumbers(loopDevice));
}

export async function clearThrottle(loopDevice: string): Promise<void> {
  await setThrottle(loopDevice, { readBytesPerSecond: 0, writeBytesPerSecond: 0, iops: 0 }).catch(() => {});
}

