import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isBuildfleetError } from '../imagebuilder/errors.js';
import { planEviction, parseSize } from './gc.js';
import { archDir, parseRegistryRepo, registryTag, toolchainKey } from './key.js';
import { artifactManifest, layerOf, TOOLCHAIN_ARTIFACT_TYPE } from './remote.js';
import { checkSet, CHECK_BUDGET, type TreeFile } from './tree.js';

/** The pure parts of the cache: keys and tags, the eviction plan, sizes, the check set, artifact manifests. */

const usage = (err: unknown) => isBuildfleetError(err) && err.kind === 'usage' && !err.message.includes('\n');

test('keys: names checked, the platform and libc given or detected, tags readable', () => {
  const key = toolchainKey('node', '20.19.0+build.1', { platform: 'linux/arm64', libc: 'musl' });
  assert.deepEqual(key, { tool: 'node', version: '20.19.0+build.1', os: 'linux', architecture: 'arm64', libc: 'musl' });
  assert.equal(registryTag(key), 'node-20.19.0_build.1-linux-arm64-musl');
  assert.equal(archDir({ architecture: 'amd64' }), 'x64', 'the arch name hosted runners use');
  assert.equal(toolchainKey('go', '1.22').libc, 'glibc', 'this machine is glibc');
  assert.throws(() => toolchainKey('../etc', '1'), usage);
  assert.throws(() => toolchainKey('node', '1/../../x'), usage);
  assert.throws(() => toolchainKey('node', '..'), usage);
  assert.throws(() => toolchainKey('node', '1', { libc: 'uclibc' }), usage);
  assert.deepEqual(parseRegistryRepo('127.0.0.1:5000/team/toolchains'), { host: '127.0.0.1:5000', repo: 'team/toolchains' });
  assert.throws(() => parseRegistryRepo('toolchains'), usage);
  assert.throws(() => parseRegistryRepo('host/Upper'), usage);
});

test('eviction plan: least recently used first, down to the size and up to the free space', () => {
  const entries = [
    { path: 'a', size: 40, lastUsed: 4 },
    { path: 'b', size: 30, lastUsed: 1 },
    { path: 'c', size: 20, lastUsed: 3 },
    { path: 'd', size: 10, lastUsed: 2 },
  ];
  assert.deepEqual(planEviction(entries, { maxSize: 100 }, 0), []);
  assert.deepEqual(planEviction(entries, { maxSize: 60 }, 0).map((e) => e.path), ['b', 'd']);
  assert.deepEqual(planEviction(entries, { minFree: 50 }, 15).map((e) => e.path), ['b', 'd']);
  assert.deepEqual(planEviction(entries, { maxSize: 95, minFree: 60 }, 0).map((e) => e.path), ['b', 'd', 'c']);
  assert.deepEqual(planEviction(entries, { maxSize: 0 }, 0).map((e) => e.path), ['b', 'd', 'c', 'a']);
});

test('sizes: binary single letters as df -h, decimal and binary suffixes, clear errors', () => {
  assert.equal(parseSize('500M', '--max-size'), 500 * 1024 ** 2);
  assert.equal(parseSize('2GB', '--max-size'), 2e9);
  assert.equal(parseSize('1.5GiB', '--max-size'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('4096', '--min-free'), 4096);
  assert.throws(() => parseSize('lots', '--min-free'), (err) => usage(err) && /--min-free/.test((err as Error).message));
});

test('check set: all files of a small entry; of a big one the largest and a spread, within the budget', () => {
  const small: TreeFile[] = [['bin', 'd', 0, 0o40755, 1], ['bin/x', 'f', 5, 0o100755, 1], ['lib', 'l', 3, 0o120777, 1]];
  assert.deepEqual(checkSet(small).map((f) => f[0]), ['bin/x', 'lib'], 'directories aside');
  const big: TreeFile[] = Array.from({ length: 5000 }, (_, i) => [`f${i}`, 'f', i === 4321 ? 1e9 : i % 97, 0o100644, 1] as TreeFile);
  const chosen = checkSet(big);
  assert.equal(chosen.length, CHECK_BUDGET);
  assert.ok(chosen.some((f) => f[0] === 'f4321'), 'the largest file is always checked');
  assert.ok(chosen.some((f) => f[0] === 'f0') && chosen.some((f) => Number(f[0].slice(1)) > 4000), 'the spread covers the whole tree');
});

test('artifact manifests: own artifactType, empty config, one layer; a pull checks the key in the annotations', () => {
  const key = toolchainKey('python', '3.12.1', { platform: 'linux/amd64', libc: 'glibc' });
  const manifest = artifactManifest(key, { digest: `sha256:${'a'.repeat(64)}`, size: 10 }, 'zstd', new Date(0));
  assert.equal(manifest.artifactType, TOOLCHAIN_ARTIFACT_TYPE);
  assert.deepEqual(manifest.config, { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2, data: 'e30=' });
  assert.deepEqual(layerOf(manifest, key, 'x'), { digest: `sha256:${'a'.repeat(64)}`, size: 10, codec: 'zstd' });
  assert.equal(layerOf(manifest, { ...key, libc: 'musl' }, 'x'), undefined, 'another key under the same tag is a miss');
  assert.throws(() => layerOf({ ...manifest, artifactType: 'application/vnd.example' }, key, 'reg/repo:tag'), (err) => isBuildfleetError(err) && err.kind === 'format');
  assert.throws(() => layerOf({ ...manifest, layers: [] }, key, 'reg/repo:tag'), /exactly one/);
});
