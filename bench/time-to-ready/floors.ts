import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { createDisk, detachLoopDevice } from '../../nodepool/local/disks.js';
import { defaultDisk } from '../../nodepool/pool-spec/pool-spec.js';
import type { FloorRun } from './report.js';

/**
 * The two floors of time-to-ready, measured with standard tools on the same kind of disk a node
 * gets (a fresh ext4 loop disk with direct I/O), so they sit in the same table as the nodes:
 *
 * - stream floor: `curl | pigz -d | tar -x` of the squashed layer(s), one after another, what a
 *   runtime's own pull could at best do with one stream;
 * - extract floor: `tar -x` of the same content, uncompressed and already in memory, what any
 *   path that writes the files must pay.
 *
 * Neither ends with a `sync`: a node is ready before its page cache is written back.
 */

export type FloorInput = {
  /** Blob URLs of the squashed image's layers, in order (a plain-HTTP loopback registry). */
  layerUrls: string[];
  /** Where the fresh disks and the in-memory tar go; removed afterwards. */
  workDir: string;
  diskBytes: number;
};

/** A fresh ext4 loop disk for one measurement, detached and removed afterwards, also on failure. */
export async function withFreshDisk<T>(workDir: string, name: string, sizeBytes: number, use: (mountPoint: string) => Promise<T>): Promise<T> {
  const file = join(workDir, `${name}.img`);
  const mountPoint = join(workDir, name);
  let loopDevice: string | undefined;
  try {
    await createDisk({ role: 'workload', file, mountPoint, sizeBytes }, defaultDisk(sizeBytes), async (device) => {
      loopDevice = device;
    });
    return await use(mountPoint);
  } finally {
    await execa('umount', ['--lazy', mountPoint], { reject: false });
    if (loopDevice) await detachLoopDevice(loopDevice);
    await rm(file, { force: true });
    await rm(mountPoint, { recursive: true, force: true });
  }
}

async function timedShell(script: string, args: string[]): Promise<number> {
  const started = performance.now();
  await execa('bash', ['-o', 'pipefail', '-c', script, 'floor', ...args]);
  return (performance.now() - started) / 1000;
}

export async function streamFloor(input: FloorInput, run: number): Promise<FloorRun> {
  const seconds = await withFreshDisk(input.workDir, `stream-floor-${run}`, input.diskBytes, (dir) =>
    timedShell('dir=$1; shift; for url in "$@"; do curl -sSf "$url" | pigz -d | tar -x --numeric-owner -C "$dir"; done', [dir, ...input.layerUrls]),
  );
  return { floor: 'stream floor', run, seconds };
}

/** The uncompressed layers go to tmpfs first (untimed): the timed part reads from memory only. */
export async function extractFloor(input: FloorInput, run: number): Promise<FloorRun> {
  const memory = join('/dev/shm', `buildfleet-extract-floor-${process.pid}-${run}`);
  await mkdir(memory, { recursive: true });
  try {
    const tars = input.layerUrls.map((_, i) => join(memory, `layer${i}.tar`));
    await Promise.all(input.layerUrls.map((url, i) => execa('bash', ['-o', 'pipefail', '-c', 'curl -sSf "$1" | pigz -d > "$2"', 'fetch', url, tars[i]!])));
    const seconds = await withFreshDisk(input.workDir, `extract-floor-${run}`, input.diskBytes, (dir) =>
      timedShell('dir=$1; shift; for tar in "$@"; do tar -x --numeric-owner -C "$dir" -f "$tar"; done', [dir, ...tars]),
    );
    return { floor: 'extract floor', run, seconds };
  } finally {
    await rm(memory, { recursive: true, force: true });
  }
}
