import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { DockerEngine, type RegistryServer } from '../daemons/index.js';
import { conformanceCases, buildConformanceCase } from '../../test/squash-conformance/cases.js';
import { exportRootfs } from '../../test/helpers/rootfs-oracle.js';
import { startEngine, startRegistry, tempDir } from '../../test/helpers/real.js';
import { FaultProxy } from '../../test/helpers/registry-fakes.js';
import { installImage } from './install.js';
import { UnsupportedLayer } from './layer-walk.js';

/**
 * The direct pre-pull against Docker itself: images built by real `docker build` (whiteouts,
 * opaque dirs, hardlinks, devices, capabilities, odd names) are pushed, installed straight into
 * a stopped engine's store, and the engine, once started, must show exactly what the building
 * engine shows: the same image id, layers and size, the image by its RepoDigest, the same root
 * filesystem through `docker export`, and `docker save` must rebuild each layer tar to its
 * diff_id (tar-split). Bad blobs and a registry that goes away leave nothing in the store.
 */

const CASES = process.env.CASES ? process.env.CASES.split(',') : ['hardlink-target-deleted', 'hardlink-added-later', 'opaque-dir-recreated', 'delete-recreate-three-layers', 'dir-replaced-by-file-and-symlink', 'whiteout-like-names', 'long-and-unicode-names', 'non-utf8-names', 'special-mode-bits', 'fifo-and-devices', 'security-capability', 'empty-directory'];

describe('direct pre-pull into a stopped engine', { timeout: 900_000 }, () => {
  let registry: RegistryServer;
  let builder: DockerEngine;
  let work: Awaited<ReturnType<typeof tempDir>>;
  const pinned = new Map<string, string>();

  before(async () => {
    registry = await startRegistry();
    builder = await startEngine();
    work = await tempDir('buildfleet-direct-');
    for (const name of CASES) {
      const testCase = conformanceCases.find((c) => c.name === name);
      assert.ok(testCase, name);
      const tag = `127.0.0.1:${registry.port}/direct/${name}:1`;
      await buildConformanceCase(builder, tag, testCase);
      const pushed = await builder.cli(['push', tag]);
      const digest = /digest: (sha256:[a-f0-9]{64})/.exec(pushed.stdout)?.[1];
      assert.ok(digest, pushed.stdout);
      pinned.set(name, `127.0.0.1:${registry.port}/direct/${name}@${digest}`);
    }
  });

  after(async () => {
    await builder?.stop();
    await registry?.stop();
    await work?.remove();
  });

  test('the started engine shows each image exactly as the engine that built it (natively extracted; one through GNU tar in this process, one in child processes)', async () => {
    const dataRoot = join(work.path, 'installed');
    for (const [i, name] of CASES.entries()) await installImage(pinned.get(name)!, { dataRoot, childProcessMinBytes: i === 1 ? 0 : Infinity, ...(i <= 2 && { extractWith: 'tar' as const }) });
    const engine = await DockerEngine.start({ dataRoot, root: join(work.path, 'engine') });
    try {
      for (const name of CASES) {
        const ref = pinned.get(name)!;
        const [built] = JSON.parse((await builder.cli(['image', 'inspect', `${ref.split('@')[0]}:1`])).stdout);
        const [installed] = JSON.parse((await engine.cli(['image', 'inspect', ref])).stdout);
        assert.equal(installed.Id, built.Id, `${name}: image id`);
        assert.deepEqual(installed.RootFS, built.RootFS, `${name}: layers`);
        assert.equal(installed.Size, built.Size, `${name}: size`);
        assert.deepEqual(installed.RepoDigests, [ref], `${name}: RepoDigests`);
        assert.deepEqual(await exportRootfs(engine, ref), await exportRootfs(builder, `${ref.split('@')[0]}:1`), `${name}: root filesystem`);
        // docker save rebuilds every layer tar from tar-split + the files: each must hash to its diff_id.
        const saved = join(work.path, `saved-${name}`);
        await execa('sh', ['-c', `mkdir -p ${saved} && docker save ${ref} | tar -x -C ${saved}`], { env: { DOCKER_HOST: engine.host } });
        const [manifest] = JSON.parse(await readFile(join(saved, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
        const digests = await Promise.all(manifest!.Layers.map((layer) => sha256File(join(saved, layer))));
        assert.deepEqual(digests, installed.RootFS.Layers, `${name}: docker save's layer tars`);
      }
      const run = await engine.cli(['run', '--rm', '--network', 'none', '--entrypoint', '/bin/sh', pinned.get(CASES[0]!)!, '-c', 'echo ran']);
      assert.equal(run.stdout.trim(), 'ran');
    } finally {
      await engine.stop();
    }
  });

  const blobGet = (method: string, url: string) => method === 'GET' && url.includes('/blobs/') && !url.includes('uploads');
  const layerBlobGet = (digests: string[]) => (method: string, url: string) => blobGet(method, url) && digests.some((digest) => url.endsWith(digest));

  test('what the direct path would not write as Docker does is left to the runtime: an entry dated before 1970', async () => {
    const tag = `127.0.0.1:${registry.port}/direct/explicit-mtimes:1`;
    await buildConformanceCase(builder, tag, conformanceCases.find((c) => c.name === 'explicit-mtimes')!);
    const digest = /digest: (sha256:[a-f0-9]{64})/.exec((await builder.cli(['push', tag])).stdout)![1]!;
    const dataRoot = join(work.path, 'before-1970');
    await assert.rejects(installImage(`127.0.0.1:${registry.port}/direct/explicit-mtimes@${digest}`, { dataRoot }), (err: Error) => err instanceof UnsupportedLayer && /before 1970/.test(err.message));
    assert.deepEqual(await storeContents(dataRoot), { cacheDirs: [], layers: [], images: [] });
  });

  test('a blob that does not match its digest is refused and leaves nothing in the store', async () => {
    const ref = pinned.get('hardlink-added-later')!;
    const proxy = await FaultProxy.start(registry.port);
    try {
      const layers = await manifestLayers(registry, ref);
      proxy.inject({ corruptAt: 100 }, 100, layerBlobGet([layers.at(-1)!]));
      // In this process and in extraction child processes alike.
      for (const childProcessMinBytes of [Infinity, 0]) {
        const dataRoot = join(work.path, `corrupt-${childProcessMinBytes}`);
        await assert.rejects(installImage(ref.replace(`127.0.0.1:${registry.port}`, proxy.host), { dataRoot, childProcessMinBytes, resume: { retries: 1, baseDelayMs: 50 } }), /does not match|corrupt or truncated compressed data/);
        assert.deepEqual(await storeContents(dataRoot), { cacheDirs: [], layers: [], images: [] });
      }
    } finally {
      await proxy.stop();
    }
  });

  test('a download that breaks is resumed from where it broke; one that keeps breaking is a clear error and leaves nothing', async () => {
    const ref = pinned.get('delete-recreate-three-layers')!;
    const layers = await manifestLayers(registry, ref);
    const proxy = await FaultProxy.start(registry.port);
    try {
      const viaProxy = ref.replace(`127.0.0.1:${registry.port}`, proxy.host);
      // The base layer (busybox, ~1 MB compressed) breaks twice, each time after 64 KiB.
      proxy.inject({ cutAfter: 65536 }, 2, layerBlobGet([layers[0]!]));
      const resumed = await installImage(viaProxy, { dataRoot: join(work.path, 'resumed'), resume: { retries: 3, baseDelayMs: 50 } });
      assert.equal(resumed.layers, layers.length);
      const ranges = proxy.log.filter((entry) => entry.url.endsWith(layers[0]!) && entry.range).map((entry) => entry.range);
      assert.deepEqual(ranges, ['bytes=65536-', 'bytes=131072-'], 'each resume asks for the bytes after those it has');
      const stored = await storeContents(join(work.path, 'resumed'));
      assert.equal(stored.layers.length, layers.length);
      assert.deepEqual(stored.images, [resumed.imageId.slice('sha256:'.length)]);

      // Now every answer breaks before its first byte: no progress, so the resumes run out. The
      // download's error is the one reported, not the extraction child's about its short input.
      proxy.inject({ cutAfter: 0 }, 1000, layerBlobGet([layers[0]!]));
      const dataRoot = join(work.path, 'truncated');
      await assert.rejects(installImage(viaProxy, { dataRoot, childProcessMinBytes: 0, resume: { retries: 2, baseDelayMs: 50 } }), /broke at byte \d+ of \d+ and could not be resumed/);
      assert.deepEqual(await storeContents(dataRoot), { cacheDirs: [], layers: [], images: [] });
    } finally {
      await proxy.stop();
    }
  });

  test('a registry that is not there: a clear error naming it, nothing in the store', async () => {
    const dataRoot = join(work.path, 'gone');
    const ref = pinned.get(CASES[0]!)!.replace(`127.0.0.1:${registry.port}`, '127.0.0.1:9');
    await assert.rejects(installImage(ref, { dataRoot, registry: { retries: 1, retryBaseDelayMs: 20 }, resume: { retries: 1, baseDelayMs: 20 } }), /127\.0\.0\.1:9/);
    assert.deepEqual(await storeContents(dataRoot), { cacheDirs: [], layers: [], images: [] });
  });
});

/** The layer digests of a pushed image, read from the registry. */
async function manifestLayers(registry: RegistryServer, ref: string): Promise<string[]> {
  const [name, digest] = ref.split('@') as [string, string];
  const repo = name.slice(name.indexOf('/') + 1);
  const res = await fetch(`${registry.url}/v2/${repo}/manifests/${digest}`, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' } });
  return ((await res.json()) as { layers: Array<{ digest: string }> }).layers.map((layer) => layer.digest);
}

async function storeContents(dataRoot: string): Promise<{ cacheDirs: string[]; layers: string[]; images: string[] }> {
  const list = (dir: string) => readdir(dir).catch(() => [] as string[]);
  return {
    cacheDirs: (await list(join(dataRoot, 'overlay2'))).filter((name) => name !== 'l'),
    layers: await list(join(dataRoot, 'image', 'overlay2', 'layerdb', 'sha256')),
    images: await list(join(dataRoot, 'image', 'overlay2', 'imagedb', 'content', 'sha256')),
  };
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(`sha256:${hash.digest('hex')}`))
      .on('error', reject);
  });
}
