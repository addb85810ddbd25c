import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { tempDir } from '../../test/helpers/real.js';
import { sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import type { Descriptor } from '../oci/schemas.js';
import type { ImageSource } from '../transports/types.js';
import { file, writeTar } from '../../test/helpers/tar-items.js';
import { indexLayers } from './passes.js';

// Pass 1 against a hand-made source (no daemon): failure handling and the spool.
let work: { path: string; remove(): Promise<void> };

before(async () => {
  work = await tempDir();
});

after(async () => {
  await work?.remove();
});

const descriptor = (blob: Buffer): Descriptor => ({ mediaType: MediaType.ociLayer, digest: sha256Digest(blob), size: blob.length });

/** A source serving uncompressed layers; `open` overrides what a layer's openBlob does. */
function sourceOf(blobs: Buffer[], open: (index: number) => Promise<Readable> = async (i) => Readable.from([blobs[i]!])): ImageSource & { opened: number[] } {
  const opened: number[] = [];
  return {
    opened,
    reference: { transport: 'oci', path: '/nowhere', tag: 'v1' } as unknown as ImageSource['reference'],
    resolve: () => Promise.reject(new Error('not used')),
    openBlob: async (d: Descriptor) => {
      const index = blobs.findIndex((blob) => sha256Digest(blob) === d.digest);
      opened.push(index);
      return open(index);
    },
    close: async () => {},
  };
}

test('the first failing layer stops the others: the slow one is destroyed, the queued one never opened', async () => {
  const blobs = [await writeTar([file('a', 'slow')]), await writeTar([file('b', 'fails')]), await writeTar([file('c', 'queued')])];
  let slow: Readable | undefined;
  const source = sourceOf(blobs, async (index) => {
    if (index === 1) return Readable.from((async function* () { await new Promise((resolve) => setTimeout(resolve, 20)); throw new Error('layer 2 broke'); })());
    if (index === 0) {
      // Sends its first block, then nothing more: reading it would never end on its own.
      slow = new Readable({ read() {} });
      slow.push(blobs[0]!.subarray(0, 512));
      return slow;
    }
    return Readable.from([blobs[index]!]);
  });
  await assert.rejects(indexLayers(source, blobs.map(descriptor), blobs.map((b) => sha256Digest(b)), { concurrency: 2 }), /layer 2 broke/);
  assert.ok(slow?.destroyed, 'the slow layer stream was destroyed');
  assert.deepEqual(source.opened.sort(), [0, 1], 'the queued layer never started');
});

test('spools hold the verified tars; a layer that fails verification leaves no spool', async () => {
  const blobs = [await writeTar([file('a', 'one')]), await writeTar([file('b', 'two')]), await writeTar([file('c', 'three')])];
  const spoolDir = join(work.path, 'spools');
  await mkdir(spoolDir);
  const indexed = await indexLayers(sourceOf(blobs), blobs.map(descriptor), blobs.map((b) => sha256Digest(b)), { spoolDir, spoolFrom: 1 });
  assert.equal(indexed[0]!.spool, undefined, 'a kept layer is not spooled');
  for (const i of [1, 2]) assert.deepEqual(await readFile(indexed[i]!.spool!), blobs[i], `layer ${i + 1} spool`);

  const badDir = join(work.path, 'bad');
  await mkdir(badDir);
  const wrongDiffIds = blobs.map((b, i) => (i === 2 ? sha256Digest('something else') : sha256Digest(b)));
  await assert.rejects(indexLayers(sourceOf(blobs), blobs.map(descriptor), wrongDiffIds, { spoolDir: badDir }), /does not match/);
  assert.ok(!existsSync(join(badDir, 'layer-2.tar')), 'no partial or unverified spool');
});
