import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import { openDestination } from '../transports/index.js';
import { BlobStaging } from '../transports/docker-archive.js';
import type { ImageDestination } from '../transports/types.js';
import { tempDir } from '../../test/helpers/real.js';
import { archiveRef, bufferLayer, failingLayer, memorySource, slowLayer as makeSlowLayer } from '../../test/helpers/transports.js';
import { copyImage } from './copy.js';

/**
 * A copy that fails on one layer must stop the others before the destination is aborted:
 * nothing may write into a docker-archive's staging directory after it is removed (a late
 * layer used to recreate it and leave a whole layer in the tmp dir).
 */
let work: { path: string; remove(): Promise<void> };
let counter = 0;

before(async () => {
  work = await tempDir();
});

after(async () => {
  // A copy that was not stopped (a regression) would still write below work.path: let it end first.
  await Promise.allSettled(slowLayers.map((layer) => layer.quiet(60_000)));
  await sleep(200);
  await work?.remove();
});

const slowLayers: Array<ReturnType<typeof slowLayer>> = [];
const slowLayer = (...args: Parameters<typeof makeSlowLayer>): ReturnType<typeof makeSlowLayer> => {
  const layer = makeSlowLayer(...args);
  slowLayers.push(layer);
  return layer;
};

/** A private tmpDir and archive path for one test. */
async function paths(): Promise<{ tmpDir: string; archive: string }> {
  const dir = join(work.path, `case-${++counter}`);
  const tmpDir = join(dir, 'tmp');
  await mkdir(tmpDir, { recursive: true });
  return { tmpDir, archive: join(dir, 'out.tar') };
}

const failure = () => new BuildfleetError('integrity', 'layer one is broken');
const MiB = 1024 * 1024;

test('a failed layer while another is still opening: no staging left in tmpDir, no archive', { timeout: 60_000 }, async () => {
  const { tmpDir, archive } = await paths();
  const slow = slowLayer({ chunks: 32, chunkSize: MiB, chunkDelayMs: 5, openDelayMs: 300 });
  const source = memorySource([failingLayer(failure()), slow]);
  const destination = await openDestination(archiveRef(archive, 'abort/opening', 'v1'), { tmpDir });
  await assert.rejects(copyImage(source, destination, { concurrency: 4 }), /layer one is broken/);
  // Whatever the slow layer still does after the rejection must not write anything.
  await slow.quiet();
  await sleep(300);
  assert.deepEqual(await readdir(tmpDir), [], 'tmpDir holds no staging directory or file');
  assert.equal(existsSync(archive), false, 'no archive');
  assert.ok(slow.bytesServed < slow.size, `the slow layer was stopped, not copied (${slow.bytesServed} of ${slow.size} bytes read)`);
});

test('a failed layer while another is streaming: the copy is stopped before copyImage rejects', { timeout: 60_000 }, async () => {
  const { tmpDir, archive } = await paths();
  const slow = slowLayer({ chunks: 64, chunkSize: MiB, chunkDelayMs: 20 });
  const source = memorySource([slow, failingLayer(failure(), 200)]);
  const destination = await openDestination(archiveRef(archive, 'abort/streaming', 'v1'), { tmpDir });
  await assert.rejects(copyImage(source, destination, { concurrency: 4 }), /layer one is broken/);
  assert.equal(slow.opens, 1);
  assert.equal(slow.openStreams, 0, 'no source stream still open when copyImage rejects');
  assert.ok(slow.bytesServed < slow.size, `the slow layer was stopped, not copied (${slow.bytesServed} of ${slow.size} bytes read)`);
  await slow.quiet();
  await sleep(100);
  assert.deepEqual(await readdir(tmpDir), [], 'tmpDir holds no staging directory or file');
  assert.equal(existsSync(archive), false, 'no archive');
});

test('after a failure queued layers never start, and abort() comes after every destination call', { timeout: 60_000 }, async () => {
  const { tmpDir, archive } = await paths();
  const queued = [slowLayer({ chunks: 4, chunkSize: MiB, chunkDelayMs: 1 }), slowLayer({ chunks: 4, chunkSize: MiB, chunkDelayMs: 1 })];
  const slow = slowLayer({ chunks: 64, chunkSize: MiB, chunkDelayMs: 20 });
  const source = memorySource([slow, failingLayer(failure(), 100), ...queued]);
  const inner = await openDestination(archiveRef(archive, 'abort/queued', 'v1'), { tmpDir });
  const { destination, violations } = recording(inner);
  await assert.rejects(copyImage(source, destination, { concurrency: 2 }), /layer one is broken/);
  await slow.quiet();
  assert.deepEqual(queued.map((l) => l.opens), [0, 0], 'queued layers were never opened');
  assert.deepEqual(violations, []);
  assert.deepEqual(await readdir(tmpDir), []);
  assert.equal(existsSync(archive), false);
});

test('a copy that succeeds still writes the archive and leaves tmpDir empty', { timeout: 60_000 }, async () => {
  const { tmpDir, archive } = await paths();
  const source = memorySource([bufferLayer(Buffer.from('first layer')), slowLayer({ chunks: 4, chunkSize: 64 * 1024, chunkDelayMs: 1 }), bufferLayer(Buffer.from('third layer'))]);
  const result = await copyImage(source, await openDestination(archiveRef(archive, 'abort/ok', 'v1'), { tmpDir }), { concurrency: 2 });
  assert.deepEqual(result.layers.map((l) => l.action), ['copied', 'copied', 'copied']);
  assert.ok(existsSync(archive));
  assert.deepEqual(await readdir(tmpDir), []);
});

test('BlobStaging: put after remove() fails clearly and does not recreate the directory', { timeout: 30_000 }, async () => {
  const { tmpDir } = await paths();
  const staging = await BlobStaging.create(tmpDir, 'docker-archive test');
  await staging.remove();
  let opened = false;
  const open = async () => {
    opened = true;
    return Readable.from([Buffer.from('x')]);
  };
  await assert.rejects(staging.put(open, { mediaType: MediaType.dockerLayer }), (err: unknown) => {
    assert.ok(err instanceof BuildfleetError);
    assert.equal(err.kind, 'usage');
    assert.match(err.message, /putBlob after commit\(\) or abort\(\)/);
    return true;
  });
  assert.equal(opened, false, 'the source was not even opened');
  await assert.rejects(staging.putManifest(Buffer.from('{}'), MediaType.dockerManifest, []), /after commit\(\) or abort\(\)/);
  assert.equal(existsSync(staging.dir), false);
  assert.deepEqual(await readdir(tmpDir), []);
});

test('BlobStaging: remove() stops puts in flight, waits for them, and the directory stays gone', { timeout: 30_000 }, async () => {
  const { tmpDir } = await paths();
  const staging = await BlobStaging.create(tmpDir, 'docker-archive test');
  // One put whose source answers only after remove(), one that is streaming when it comes.
  const late = slowLayer({ chunks: 16, chunkSize: MiB, chunkDelayMs: 1, openDelayMs: 200 });
  const streaming = slowLayer({ chunks: 64, chunkSize: MiB, chunkDelayMs: 20 });
  const puts = [
    staging.put(() => late.open(), { mediaType: MediaType.dockerLayer, digest: late.digest, size: late.size }),
    staging.put(() => streaming.open(), { mediaType: MediaType.dockerLayer, digest: streaming.digest, size: streaming.size }),
  ];
  await sleep(50);
  await staging.remove();
  assert.equal(streaming.openStreams, 0, 'remove() returned only after the streaming put stopped');
  for (const put of puts) await assert.rejects(put, /putBlob after commit\(\) or abort\(\)/);
  await late.quiet();
  await streaming.quiet();
  await sleep(100);
  assert.equal(existsSync(staging.dir), false, 'the staging directory was not recreated');
  assert.deepEqual(await readdir(tmpDir), []);
  assert.ok(late.bytesServed < late.size && streaming.bytesServed < streaming.size, 'neither blob was read to the end');
});

/**
 * Wraps a destination and records what breaks the abort contract: a blob call that starts
 * once abort() has begun, or abort() beginning while a blob call is still running.
 */
function recording(inner: ImageDestination): { destination: ImageDestination; violations: string[] } {
  const violations: string[] = [];
  let aborting = false;
  let inFlight = 0;
  const track = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
    if (aborting) violations.push(`${what} started after abort()`);
    inFlight++;
    try {
      return await call();
    } finally {
      inFlight--;
    }
  };
  const destination: ImageDestination = {
    reference: inner.reference,
    preferences: inner.preferences,
    hasBlob: (descriptor, mountFrom) => track(`hasBlob ${descriptor.digest}`, () => inner.hasBlob(descriptor, mountFrom)),
    putBlob: (open, blob) => track(`putBlob ${blob.digest ?? ''}`, () => inner.putBlob(open, blob)),
    putManifest: (bytes, mediaType) => inner.putManifest(bytes, mediaType),
    commit: () => inner.commit(),
    abort: () => {
      if (inFlight > 0) violations.push(`abort() while ${inFlight} blob call(s) still running`);
      aborting = true;
      return inner.abort();
    },
  };
  return { destination, violations };
}
