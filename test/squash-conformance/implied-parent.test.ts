import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import type { DockerEngine } from '../../daemons/index.js';
import { dockerBuild, startEngine, tempDir } from '../helpers/real.js';
import { diffRootfs, exportRootfs, type RootfsEntry } from '../helpers/rootfs-oracle.js';
import type { SquashOptions } from '../../imagebuilder/squash/squash.js';
import { BASE } from './cases.js';
import { archiveWithLayers, handMadeLayer, squashOnEngine } from './hand-made.js';

/**
 * A layer that holds `a/b/file` but no `a/` or `a/b/` entry, over a base where `a` and `a/b`
 * are directories with their own mode and owner. `docker build` never writes such a layer, so
 * it is made by hand (./hand-made.ts) and loaded with `docker load`. The oracle is, as in
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

/**
 * `docker save`s the base and appends the hand-made layer: one regular file, no directory
 * entries at all (archiveWithLayers); then `docker load`s the result as ORIGINAL.
 */
const loadImageWithFileOnlyLayer = {
  archive: '',
  async prepare(): Promise<void> {
    await dockerBuild(engine, BASE_TAG, BASE_DOCKERFILE);
    const layer = await handMadeLayer([{ name: 'a/b/file', body: 'upper\n' }]);
    this.archive = await archiveWithLayers(engine, work.path, BASE_TAG, ORIGINAL, [layer]);
  },
  async load(): Promise<void> {
    await engine.cli(['load', '-i', this.archive]);
    await rm(this.archive, { force: true });
  },
};

const squash = (src: string, dst: string, options: SquashOptions): Promise<void> => squashOnEngine(engine, work.path, src, dst, options);

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
