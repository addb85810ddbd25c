import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, stat, truncate, writeFile, cp } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import bcrypt from 'bcryptjs';
import type { RegistryServer } from '../../nodepool/daemons/index.js';
import { freePort } from '../../nodepool/daemons/index.js';
import { runCli, startRegistry, tempDir } from '../../test/helpers/real.js';
import { htpasswdAuth } from '../../test/helpers/registry-fakes.js';
import { oneClearLine } from '../../test/helpers/assertions.js';
import { openDestination } from '../transports/index.js';
import { generateImage } from '../../bench/image-generator.js';
import { digestHex } from '../oci/digest.js';

// Real registries (docker-registry package); no Docker Engine needed: images are generated.
let registry: RegistryServer;
let locked: RegistryServer;
let work: { path: string; remove(): Promise<void> };
let layout: string;
let archive: string;

before(async () => {
  work = await tempDir();
  const htpasswd = join(work.path, 'htpasswd');
  await writeFile(htpasswd, `alice:${bcrypt.hashSync('s3cret', 10)}\n`);
  [registry, locked] = await Promise.all([startRegistry(), startRegistry({ auth: htpasswdAuth(htpasswd) })]);
  layout = join(work.path, 'good-layout');
  archive = join(work.path, 'good.tar');
  await generateImage(await openDestination(`oci:${layout}:v1`), { layers: 3, totalBytes: 3_000_000, filesPerLayer: 20, format: 'oci' });
  await generateImage(await openDestination(`docker-archive:${archive}:bad/input:v1`), { layers: 3, totalBytes: 3_000_000, filesPerLayer: 20 });
  await generateImage(await openDestination(`${registry.host}/bad/source:v1`), { layers: 3, totalBytes: 3_000_000, filesPerLayer: 20 });
}, { timeout: 120_000 });

after(async () => {
  await Promise.allSettled([registry?.stop(), locked?.stop(), work?.remove()]);
});

async function tagsOf(server: RegistryServer, repository: string): Promise<string[]> {
  const res = await request(`${server.url}/v2/${repository}/tags/list`);
  const body = (await res.body.json()) as { tags?: string[] | null };
  return res.statusCode === 200 ? (body.tags ?? []) : [];
}

test('an unknown reference is refused with one line, exit 2', { timeout: 60_000 }, async () => {
  oneClearLine(await runCli(['image', 'inspect', 'ftp://example/x']), 2, /unknown transport "ftp:"/);
  oneClearLine(await runCli(['image', 'copy', `oci:${layout}:v1`, 'dir:/tmp/x']), 2, /unknown transport "dir:"/);
});

test('a registry that is down gives a network error and creates nothing at the destination', { timeout: 120_000 }, async () => {
  const port = await freePort();
  const destination = join(work.path, 'never-created');
  const result = await runCli(['image', 'copy', `127.0.0.1:${port}/x/y:v1`, `oci:${destination}:v1`]);
  oneClearLine(result, 5, new RegExp(`127\\.0\\.0\\.1:${port}`));
  assert.equal(existsSync(destination), false, 'no layout was created');
});

test('wrong credentials give an auth error and push nothing; right ones work', { timeout: 120_000 }, async () => {
  oneClearLine(await runCli(['--creds', 'alice:wrong', 'image', 'copy', `oci:${layout}:v1`, `${locked.host}/auth/image:v1`]), 4, /credentials|unauthorized|denied/i);
  const ok = await runCli(['--creds', 'alice:s3cret', 'image', 'copy', `oci:${layout}:v1`, `${locked.host}/auth/image:v1`]);
  assert.equal(ok.exitCode, 0, ok.stderr);
});

test('a blob whose bytes do not match its digest fails the copy; the layout gets no entry', { timeout: 120_000 }, async () => {
  const corrupt = await runCli(['--json', 'image', 'inspect', `${registry.host}/bad/source:v1`]);
  const layer = (JSON.parse(corrupt.stdout) as { layers: Array<{ digest: string }> }).layers[1]!.digest;
  const hex = digestHex(layer);
  const dataFile = registry.blobFile(layer);
  const original = await readFile(dataFile);
  const flipped = Buffer.from(original);
  const middle = Math.floor(flipped.length / 2);
  flipped[middle] = flipped[middle]! ^ 0xff;
  await writeFile(dataFile, flipped);
  try {
    const destination = join(work.path, 'from-corrupt');
    oneClearLine(await runCli(['image', 'copy', `${registry.host}/bad/source:v1`, `oci:${destination}:v1`]), 6, /digest|integrity|does not match/);
    if (existsSync(join(destination, 'index.json'))) {
      const index = JSON.parse(await readFile(join(destination, 'index.json'), 'utf8')) as { manifests: unknown[] };
      assert.deepEqual(index.manifests, [], 'no manifest points at the corrupt image');
    }
    const leftovers = existsSync(destination) ? await readdir(join(destination, 'blobs', 'sha256')).catch(() => []) : [];
    assert.ok(!leftovers.includes(hex), 'the corrupt blob was not kept');
    // Registry to registry the bytes pass through unhashed by us: the destination registry's check must catch them.
    const other = await startRegistry();
    try {
      oneClearLine(await runCli(['image', 'copy', `${registry.host}/bad/source:v1`, `${other.host}/bad/copy:v1`]), 6, /digest|integrity|does not match|invalid/i);
      assert.deepEqual(await tagsOf(other, 'bad/copy'), [], 'no manifest pushed');
    } finally {
      await other.stop();
    }
  } finally {
    await writeFile(dataFile, original);
  }
});

test('a truncated docker-archive fails with a format error and pushes no manifest', { timeout: 120_000 }, async () => {
  const truncated = join(work.path, 'truncated.tar');
  await cp(archive, truncated);
  await truncate(truncated, Math.floor((await stat(truncated)).size * 0.6));
  oneClearLine(await runCli(['image', 'copy', `docker-archive:${truncated}`, `${registry.host}/bad/truncated:v1`]), 6, /truncated/);
  assert.deepEqual(await tagsOf(registry, 'bad/truncated'), []);
});

test('a manifest naming a missing blob is refused before anything is pushed', { timeout: 120_000 }, async () => {
  const broken = join(work.path, 'broken-layout');
  await cp(layout, broken, { recursive: true });
  const index = JSON.parse(await readFile(join(broken, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const manifest = JSON.parse(await readFile(join(broken, 'blobs/sha256', digestHex(index.manifests[0]!.digest)), 'utf8')) as { layers: Array<{ digest: string }> };
  await rm(join(broken, 'blobs/sha256', digestHex(manifest.layers[2]!.digest)));
  const result = await runCli(['image', 'copy', `oci:${broken}:v1`, `${registry.host}/bad/missing:v1`]);
  const missing = new RegExp(`the layout is incomplete: layer 3 of 3 \\(blob ${manifest.layers[2]!.digest}\\) is missing`);
  oneClearLine(result, 6, missing);
  assert.deepEqual(await tagsOf(registry, 'bad/missing'), [], 'no manifest was pushed');
  // inspect reads no layer, yet must not show an incomplete image as whole.
  oneClearLine(await runCli(['image', 'inspect', `oci:${broken}:v1`]), 6, missing);
});
