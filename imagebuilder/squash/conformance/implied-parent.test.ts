import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { execa } from 'execa';
import tar from 'tar-stream';
import type { DockerEngine } from '../../daemons/index.js';
import { dockerBuild, startEngine, tempDir } from '../../../test/helpers/real.js';
import { diffRootfs, exportRootfs, type RootfsEntry } from '../../../test/helpers/rootfs-oracle.js';
import { openDestination, openSource } from '../../transports/index.js';
import { squashImage, type SquashOptions } from '../squash.js';
import { BASE } from './cases.js';

/**
 * A layer that holds `a/b/file` but no `a/` or `a/b/` entry, over a base where `a` and `a/b`
 * are directories with their own mode and owner. `docker build` never writes such a layer, so
 * it is made by hand (tar-stream) and loaded with `docker load`. The oracle is, as in
 * squash-conformance.test.ts, what Docker 20.10 (overlay2) shows for a container of the image.
 */
let engine: DockerEngine;
let work: { path: string; remove(): Promise<void> };

const ORIGINAL = 'implied-parent/orig:v1';
const BASE_TAG = 'implied-parent/base:v1';
/** The base's directories: deliberately unlike Docker's default (0755, root). */
const BASE_DOCKERFILE = [
  `FROM ${BASE}`,
  'RUN mkdir -p /a/b && echo lower > /a/b/lower && chown 1000:1000 /a /a/b && chmod 0750 /a && chmod 0700 /a/b && touch -d @1600000000 /a/b /a',
  '',
].join('\n');

before(async () => {
  [engine, work] = await Promise.all([startEngine(), tempDir()]);
}, { timeout: 120_000 });

after(async () => {
  await Promise.allSettled([engine?.stop(), work?.remove()]);
});

/** The hand-made layer: one regular file, no directory entries at all. */
async function fileOnlyLayer(): Promise<Buffer> {
  const pack = tar.pack();
  pack.entry({ name: 'a/b/file', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: new Date(1_650_000_000_000) }, 'upper\n');
  pack.finalize();
  return buffer(pack);
}

/**
 * `docker save`s the base and appends the hand-made layer (config diff_ids and history,
 * manifest.json Layers); then `docker load`s the result as ORIGINAL.
 */
const loadImageWithFileOnlyLayer = {
  archive: '',
  async prepare(): Promise<void> {
    await dockerBuild(engine, BASE_TAG, BASE_DOCKERFILE);
    const dir = join(work.path, 'archive');
    await mkdir(dir, { recursive: true });
    const saved = join(work.path, 'base.tar');
    await engine.cli(['save', '-o', saved, BASE_TAG]);
    await execa('tar', ['-xf', saved, '-C', dir]);
    await rm(join(dir, 'repositories'), { force: true });
    const [entry] = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;
    const config = JSON.parse(await readFile(join(dir, entry!.Config), 'utf8')) as { rootfs: { diff_ids: string[] }; history?: unknown[] };

    const layer = await fileOnlyLayer();
    const layerHex = createHash('sha256').update(layer).digest('hex');
    await mkdir(join(dir, layerHex));
    await writeFile(join(dir, layerHex, 'layer.tar'), layer);
    config.rootfs.diff_ids.push(`sha256:${layerHex}`);
    config.history = [...(config.history ?? []), { created: '2022-04-15T05:20:00Z', created_by: 'hand-made layer: a/b/file without a/ or a/b/ entries' }];
    const configBytes = Buffer.from(JSON.stringify(config));
    const configName = `${createHash('sha256').update(configBytes).digest('hex')}.json`;
    await rm(join(dir, entry!.Config));
    await writeFile(join(dir, configName), configBytes);
    await writeFile(join(dir, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: [ORIGINAL], Layers: [...entry!.Layers, `${layerHex}/layer.tar`] }]));

    this.archive = join(work.path, 'orig.tar');
    await execa('tar', ['-cf', this.archive, '-C', dir, '.']);
    await rm(dir, { recursive: true, force: true });
    await rm(saved, { force: true });
  },
  async load(): Promise<void> {
    await engine.cli(['load', '-i', this.archive]);
    await rm(this.archive, { force: true });
  },
};

async function squash(src: string, dst: string, options: SquashOptions): Promise<void> {
  const transport = { docker: engine.docker, tmpDir: work.path };
  const source = await openSource(src, transport);
  try {
    await squashImage(source, await openDestination(dst, transport), { tmpDir: work.path, ...options });
  } finally {
    await source.close();
  }
}

const show = (entries: RootfsEntry[], paths: string[]): string =>
  paths
    .map((path) => entries.find((e) => e.path === path))
    .map((e) => (e ? `${e.path} ${e.type} ${e.mode.toString(8).padStart(4, '0')} ${e.uid}:${e.gid} mtime ${e.mtimeNs === null ? '-' : String(e.mtimeNs / 1_000_000_000n)}` : 'missing'))
    .join('; ');

const WATCHED = ['/a', '/a/b', '/a/b/file', '/a/b/lower'];

/** When `docker load` of ORIGINAL began (ms), once it is loaded. */
let loaded: Promise<number> | undefined;
const loadOnce = (): Promise<number> =>
  (loaded ??= (async () => {
    await loadImageWithFileOnlyLayer.prepare();
    // A second apart from the base's build, so a directory created by the load is told by its mtime.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const started = Date.now();
    await loadImageWithFileOnlyLayer.load();
    return started;
  })());

test('the oracle: Docker (overlay2) shows parents a layer leaves out as new 0755 root directories', { timeout: 300_000 }, async (t) => {
  const loadStarted = await loadOnce();
  const { stdout: driver } = await engine.cli(['info', '--format', '{{.Driver}}']);
  assert.equal(driver.trim(), 'overlay2');
  const base = await exportRootfs(engine, BASE_TAG);
  const original = await exportRootfs(engine, ORIGINAL);
  t.diagnostic(`base:     ${show(base, WATCHED)}`);
  t.diagnostic(`original: ${show(original, WATCHED)}`);
  const at = (entries: RootfsEntry[], path: string) => entries.find((e) => e.path === path);
  // The base holds what the Dockerfile made.
  assert.deepEqual([at(base, '/a'), at(base, '/a/b')].map((e) => e && [e.mode, e.uid, e.gid, e.mtimeNs]), [
    [0o750, 1000, 1000, 1_600_000_000_000_000_000n],
    [0o700, 1000, 1000, 1_600_000_000_000_000_000n],
  ]);
  // Over it, the file-only layer shows a/ and a/b/ as Docker made them when it applied the layer.
  for (const path of ['/a', '/a/b']) {
    const entry = at(original, path)!;
    assert.deepEqual([entry.type, entry.mode, entry.uid, entry.gid], ['dir', 0o755, 0, 0], path);
    assert.ok(entry.mtimeNs! >= BigInt(Math.floor(loadStarted / 1000)) * 1_000_000_000n, `${path}: mtime is the time of docker load`);
  }
  assert.ok(at(original, '/a/b/lower'), 'the lower content of a/b is still there: the directories merge');
  assert.equal(at(original, '/a/b/file')?.mode, 0o644);
});

test(
  'squash keeps what the runtime sees: a layer that leaves out its parent directories',
  {
    timeout: 300_000,
  },
  async (t) => {
    await loadOnce();
    const expected = await exportRootfs(engine, ORIGINAL);
    const failures: string[] = [];
    for (const options of [{ layers: 1 }, { layers: 4 }, { fromLayer: 2 }, { fromLayer: 3 }] satisfies SquashOptions[]) {
      const name = 'layers' in options ? `k${options.layers}` : `from${options.fromLayer}`;
      const squashed = `implied-parent/orig:${name}`;
      await squash(`docker-daemon:${ORIGINAL}`, `docker-daemon:${squashed}`, options);
      const actual = await exportRootfs(engine, squashed);
      t.diagnostic(`squashed ${name}: ${show(actual, WATCHED)}`);
      for (const path of ['/a', '/a/b']) {
        const entry = actual.find((e) => e.path === path)!;
        assert.deepEqual([entry.type, entry.mode, entry.uid, entry.gid], ['dir', 0o755, 0, 0], `${name}: ${path}`);
      }
      // The one thing no squash can give back: Docker stamps the directories it creates with the
      // time it applied the layer. The squash uses the entry's own time (deterministic output).
      const withoutApplyTime = (entries: RootfsEntry[]) => entries.map((e) => (e.path === '/a' || e.path === '/a/b' ? { ...e, mtimeNs: null } : e));
      failures.push(...diffRootfs(withoutApplyTime(expected), withoutApplyTime(actual)).map((line) => `${name}: ${line}`));
    }
    assert.deepEqual(failures, [], 'root filesystems differ');
  },
);
