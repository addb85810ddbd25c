import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DockerEngine } from '../../daemons/index.js';
import { dockerBuild, runCli, startEngine, tempDir } from '../helpers/real.js';
import { diffRootfs, exportRootfs, type RootfsEntry } from '../helpers/rootfs-oracle.js';
import type { SquashOptions } from '../../imagebuilder/squash/squash.js';
import { BASE } from './cases.js';
import { archiveWithLayers, handMadeLayer, squashOnEngine } from './hand-made.js';

/**
 * A path through a symlink (or a file) of the merged view: `lnk -> dir` followed by `lnk/f`.
 * `docker build` never writes such a layer; these are made by hand (./hand-made.ts) and the
 * oracle is what Docker 20.10 (overlay2) does with them: refuse the layer, or show a tree.
 * Real Docker Engine; root.
 */
let engine: DockerEngine;
let work: { path: string; remove(): Promise<void> };

const BASE_TAG = 'symlink-parent/base:v1';
/** The lower layer: a symlink to a directory, and a regular file. */
const BASE_DOCKERFILE = [`FROM ${BASE}`, 'RUN mkdir /target && echo t > /target/t && ln -s /target /lnk && echo file > /file', ''].join('\n');

before(async () => {
  [engine, work] = await Promise.all([startEngine(), tempDir()]);
  await dockerBuild(engine, BASE_TAG, BASE_DOCKERFILE);
}, { timeout: 180_000 });

after(async () => {
  await Promise.allSettled([engine?.stop(), work?.remove()]);
});

const squash = (src: string, dst: string, options: SquashOptions): Promise<void> => squashOnEngine(engine, work.path, src, dst, options);

const WITHIN_ONE_LAYER = {
  'to a missing directory': [{ name: 'own', type: 'symlink', linkname: '/nowhere' }, { name: 'own/f', body: 'f\n' }],
  'to a lower directory': [{ name: 'own', type: 'symlink', linkname: '/target' }, { name: 'own/f', body: 'f\n' }],
  'below a file': [{ name: 'own', body: 'a file\n' }, { name: 'own/f', body: 'f\n' }],
} as const;

for (const [name, entries] of Object.entries(WITHIN_ONE_LAYER)) {
  test(`a path through a symlink or file of the same layer (${name}): docker load refuses it, and so does the squash (exit 6, naming the entry)`, { timeout: 300_000 }, async () => {
    const tag = `symlink-parent/within-${name.replace(/\W/g, '-')}:v1`;
    const archive = await archiveWithLayers(engine, work.path, BASE_TAG, tag, [await handMadeLayer([...entries])]);
    const load = await engine.cli(['load', '-i', archive]).then(() => undefined, (err: Error) => err);
    assert.ok(load instanceof Error, 'docker load refuses the layer');
    const out = join(work.path, `out-${tag.replace(/\W/g, '-')}`);
    const result = await runCli(['image', 'squash', `docker-archive:${archive}`, `oci:${out}:v1`]);
    assert.equal(result.exitCode, 6, result.stderr);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.match(result.stderr, /entry "own\/f" lies below "own"/);
    if (existsSync(join(out, 'index.json'))) assert.deepEqual(JSON.parse(await readFile(join(out, 'index.json'), 'utf8')).manifests, [], 'no image at the destination');
  });
}

test('a symlink to a directory the same layer made: Docker writes through it, the squash refuses it rather than guess (exit 6)', { timeout: 300_000 }, async () => {
  const tag = 'symlink-parent/within-own-dir:v1';
  const entries = [{ name: 'real', type: 'directory' }, { name: 'own', type: 'symlink', linkname: '/real' }, { name: 'own/f', body: 'f\n' }] as const;
  const archive = await archiveWithLayers(engine, work.path, BASE_TAG, tag, [await handMadeLayer([...entries])]);
  await engine.cli(['load', '-i', archive]);
  const shown = await exportRootfs(engine, tag);
  assert.deepEqual(['/own', '/real/f', '/own/f'].map((path) => shown.find((e) => e.path === path)?.type), ['symlink', 'file', undefined]);
  const result = await runCli(['image', 'squash', `docker-archive:${archive}`, `oci:${join(work.path, 'out-own-dir')}:v1`]);
  assert.equal(result.exitCode, 6, result.stderr);
  assert.match(result.stderr, /entry "own\/f" lies below "own", which this layer made a symlink/);
});

const show = (entries: RootfsEntry[], paths: string[]): string =>
  paths.map((path) => entries.find((e) => e.path === path)).map((e, i) => (e ? `${e.path} ${e.type}${e.linkTarget ? ` -> ${e.linkTarget}` : ''} ${e.mode.toString(8)}` : `${paths[i]} missing`)).join('; ');

test("a path through a lower layer's symlink or file: Docker shows the layer's new directory over it, and so does the squash", { timeout: 300_000 }, async (t) => {
  const ORIGINAL = 'symlink-parent/across:v1';
  const archive = await archiveWithLayers(engine, work.path, BASE_TAG, ORIGINAL, [await handMadeLayer([{ name: 'lnk/f', body: 'f\n' }, { name: 'file/g', body: 'g\n' }])]);
  await engine.cli(['load', '-i', archive]);
  const expected = await exportRootfs(engine, ORIGINAL);
  const watched = ['/lnk', '/lnk/f', '/lnk/t', '/file', '/file/g', '/target', '/target/t', '/target/f'];
  t.diagnostic(`docker: ${show(expected, watched)}`);
  const at = (entries: RootfsEntry[], path: string) => entries.find((e) => e.path === path);
  // What the runtime does: the layer's own directory hides the lower symlink and file; the symlink's target is untouched.
  assert.deepEqual([at(expected, '/lnk')?.type, at(expected, '/lnk')?.mode, at(expected, '/file')?.type], ['dir', 0o755, 'dir']);
  assert.ok(at(expected, '/lnk/f') && at(expected, '/file/g') && !at(expected, '/lnk/t') && !at(expected, '/target/f') && at(expected, '/target/t'));
  // Docker stamps the directories it creates with the time it applied the layer; the squash uses the entry's own time.
  const withoutApplyTime = (entries: RootfsEntry[]) => entries.map((e) => (e.path === '/lnk' || e.path === '/file' ? { ...e, mtimeNs: null } : e));
  const failures: string[] = [];
  for (const options of [{ layers: 1 }, { layers: 4 }, { fromLayer: 2 }] satisfies SquashOptions[]) {
    const name = 'layers' in options ? `k${options.layers}` : `from${options.fromLayer}`;
    await squash(`docker-daemon:${ORIGINAL}`, `docker-daemon:symlink-parent/across:${name}`, options);
    const actual = await exportRootfs(engine, `symlink-parent/across:${name}`);
    t.diagnostic(`${name}: ${show(actual, watched)}`);
    failures.push(...diffRootfs(withoutApplyTime(expected), withoutApplyTime(actual)).map((line) => `${name}: ${line}`));
  }
  assert.deepEqual(failures, [], 'root filesystems differ');
});
