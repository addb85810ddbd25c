import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openDestination, openSource } from '../imagebuilder/transports/index.js';
import { readTar } from '../imagebuilder/tar/reader.js';
import { decompressor } from '../imagebuilder/compress/codecs.js';
import { pipeOn } from '../imagebuilder/compress/streams.js';
import { BUILD_IMAGE_PRESETS, toolchainDir, writeBuildImage } from './build-image.js';

test('the small build image: a base, toolchains, deletions and copy-ups, the same digest every time', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bf-build-image-'));
  try {
    const first = await writeBuildImage(await openDestination(`oci:${join(dir, 'a')}:small`), BUILD_IMAGE_PRESETS.small);
    const second = await writeBuildImage(await openDestination(`oci:${join(dir, 'b')}:small`), BUILD_IMAGE_PRESETS.small);
    assert.equal(first.manifestDigest, second.manifestDigest);
    // busybox + 6 toolchains + 2 deletion layers (after 3 and 6) + 1 copy-up layer (after 4).
    assert.equal(first.layers.length, 10);
    const source = await openSource(`oci:${join(dir, 'a')}:small`);
    try {
      const image = await source.resolve();
      const paths: string[][] = [];
      for (const layer of image.manifest.layers) {
        const names: string[] = [];
        for await (const entry of readTar(pipeOn(await source.openBlob(layer), decompressor('gzip')), { what: layer.digest })) names.push(entry.header.path);
        paths.push(names);
      }
      assert.ok(paths[0]!.includes('bin/busybox'), 'the base layer is busybox');
      assert.ok(paths[1]!.some((path) => path.startsWith(`${toolchainDir(0)}/lib/d0/`)));
      const deletion = paths[4]!;
      assert.ok(deletion.includes(`${toolchainDir(1)}/.wh.share`), deletion.join(' '));
      assert.ok(deletion.includes(`${toolchainDir(1)}/lib/d0/.wh..wh..opq`));
      const copyUp = paths[6]!;
      assert.ok(copyUp.length > 4 && copyUp.every((path) => path.startsWith('opt')), copyUp.join(' '));
    } finally {
      await source.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
