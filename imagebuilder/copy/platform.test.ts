import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { generateImage } from '../../bench/image-generator.js';
import { hostPlatform } from '../oci/platform.js';
import { openDestination, openSource } from '../transports/index.js';
import { tempDir } from '../../test/helpers/real.js';
import { errorOf } from '../../test/helpers/assertions.js';
import { copyImage } from './copy.js';
import { inspectImage } from './inspect.js';

// An OCI layout on disk: no daemon needed.
let work: { path: string; remove(): Promise<void> };
let layout: string;
const host = hostPlatform();
const other = { os: 'linux', architecture: host.architecture === 's390x' ? 'riscv64' : 's390x' };

before(async () => {
  work = await tempDir();
  layout = join(work.path, 'single-arch');
  await generateImage(await openDestination(`oci:${layout}:v1`), { layers: 1, totalBytes: 10_000, filesPerLayer: 3, format: 'oci' });
});

after(async () => {
  await work?.remove();
});

test('--platform on a single-platform image of another platform is an error naming what it has', { timeout: 60_000 }, async () => {
  const source = await openSource(`oci:${layout}:v1`);
  try {
    const wanted = `linux/${other.architecture}`;
    const has = new RegExp(`oci:${layout.replace(/[.]/g, '\\.')}:v1 is a single-platform image for linux/${host.architecture}, not ${wanted}`);
    await assert.rejects(inspectImage(source, { platform: other }), errorOf('not-found', has));
    const destination = join(work.path, 'copied');
    await assert.rejects(copyImage(source, await openDestination(`oci:${destination}:v1`), { platform: other }), errorOf('not-found', has));
    assert.equal(existsSync(join(destination, 'index.json')), false, 'nothing written');
    // Its own platform, or none asked for: the image.
    assert.equal((await inspectImage(source, { platform: { os: 'linux', architecture: host.architecture } })).platform, `linux/${host.architecture}`);
    assert.equal((await inspectImage(source)).platform, `linux/${host.architecture}`);
  } finally {
    await source.close();
  }
});
