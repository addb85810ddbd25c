import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { execa } from 'execa';
import { RegistryServer } from '../../nodepool/daemons/index.js';
import { openDestination } from '../../imagebuilder/transports/index.js';
import { loopDevicesBelow } from '../../nodepool/local/disks.js';
import { writeRunnableImage } from '../runnable-image.js';
import { extractFloor, streamFloor, withFreshDisk } from './floors.js';

// Root: the floors use loop disks like a node's. Registry: the stream floor downloads.
let registry: RegistryServer;
let work: string;
let layerUrls: string[];

before(async () => {
  registry = await RegistryServer.start();
  work = await mkdtemp(join(tmpdir(), 'bf-floors-'));
  const image = await writeRunnableImage(await openDestination(`${registry.host}/floors/build:1`), { dataLayers: 2, layerBytes: 2 << 20, seed: 'floors' });
  layerUrls = image.layers.map((layer) => `http://${registry.host}/v2/floors/build/blobs/${layer.digest}`);
});

after(async () => {
  await registry?.stop();
  await rm(work, { recursive: true, force: true });
});

test('both floors write the image content onto a fresh disk and leave no disk behind', { timeout: 120_000 }, async () => {
  const input = { layerUrls, workDir: work, diskBytes: 256 << 20 };
  const stream = await streamFloor(input, 1);
  const extract = await extractFloor(input, 1);
  assert.equal(stream.floor, 'stream floor');
  assert.equal(extract.floor, 'extract floor');
  for (const run of [stream, extract]) assert.ok(run.seconds > 0 && Number.isFinite(run.seconds), `${run.floor} took ${run.seconds} s`);
  assert.deepEqual(await loopDevicesBelow(work), []);
  assert.deepEqual(await readdir(work), []);
  assert.ok(!(await readdir('/dev/shm')).some((name) => name.startsWith(`buildfleet-extract-floor-${process.pid}-`)));
});

test('a fresh disk holds what the floor extracted, and is gone after a failure too', { timeout: 60_000 }, async () => {
  const seen = await withFreshDisk(work, 'probe', 128 << 20, async (dir) => {
    await execa('bash', ['-o', 'pipefail', '-c', 'curl -sSf "$1" | pigz -d | tar -x -C "$2"', 'x', layerUrls[1]!, dir]);
    return existsSync(join(dir, 'data', 'blob0.bin'));
  });
  assert.ok(seen, 'the data layer was extracted onto the disk');
  await assert.rejects(withFreshDisk(work, 'failing', 128 << 20, async () => Promise.reject(new Error('boom'))), /boom/);
  assert.deepEqual(await loopDevicesBelow(work), []);
  assert.deepEqual(await readdir(work), []);
});
