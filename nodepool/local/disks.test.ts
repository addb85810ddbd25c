import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { createDisk } from './disks.js';
import { leftoversBelow, releaseDisksBelow } from './cleanup.js';

// A real loop device, formatted and mounted: needs root, as CI is.
const dir = await mkdtemp('/tmp/bf-disk-');
after(async () => {
  await releaseDisksBelow(dir);
  await rm(dir, { recursive: true, force: true });
});

test('a disk gets its own I/O budget, and releasing the disks below its dir detaches it', { timeout: 60_000 }, async () => {
  const megabytesPerSecond = 20;
  const disk = await createDisk(
    { role: 'workload', file: join(dir, 'workload.img'), mountPoint: join(dir, 'workload'), sizeBytes: 256 * 1024 ** 2 },
    { size: 256 * 1024 ** 2, readBytesPerSecond: 0, writeBytesPerSecond: megabytesPerSecond * 1024 ** 2, iops: 0, journal: false },
    async () => {},
  );
  assert.match(disk.loopDevice ?? '', /^\/dev\/loop\d+$/);
  const started = performance.now();
  await execa('dd', ['if=/dev/zero', `of=${join(disk.mountPoint, 'f')}`, 'bs=1M', 'count=40', 'oflag=direct', 'conv=fsync']);
  const rate = 40 / ((performance.now() - started) / 1000);
  assert.ok(rate < megabytesPerSecond * 1.3, `wrote at ${rate.toFixed(0)} MB/s under a ${megabytesPerSecond} MB/s budget`);

  const before = await leftoversBelow(dir);
  assert.deepEqual(before.loopDevices, [disk.loopDevice]);
  const report = await releaseDisksBelow(dir);
  assert.deepEqual(report, { mounts: 1, loopDevices: 1 });
  assert.deepEqual(await leftoversBelow(dir), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  // The budget went with the device: a new device of that number starts unthrottled.
  const throttled = await execa('cat', ['/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device']);
  const device = (await execa('sh', ['-c', `cat /sys/block/${disk.loopDevice!.slice(5)}/dev 2>/dev/null || true`])).stdout.trim();
  assert.ok(!device || !throttled.stdout.includes(device), throttled.stdout);
});

test('a disk has an ext4 journal only when its spec asks for one (a node disk is never mounted again after its node went down)', { timeout: 60_000 }, async () => {
  for (const journal of [false, true]) {
    const disk = await createDisk(
      { role: 'runtime', file: join(dir, `journal-${journal}.img`), mountPoint: join(dir, `journal-${journal}`), sizeBytes: 128 * 1024 ** 2 },
      { size: 128 * 1024 ** 2, readBytesPerSecond: 0, writeBytesPerSecond: 0, iops: 0, journal },
      async () => {},
    );
    const features = (await execa('dumpe2fs', ['-h', disk.loopDevice!], { stderr: 'ignore' })).stdout.split('\n').find((line) => line.startsWith('Filesystem features:'))!;
    assert.equal(/\bhas_journal\b/.test(features), journal, features);
    await execa('sh', ['-c', 'echo written > "$1/f" && sync -f "$1/f"', 'sh', disk.mountPoint]);
  }
  await releaseDisksBelow(dir);
});
