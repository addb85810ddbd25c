import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { tempDir } from '../test/helpers/real.js';
import { waitFor } from '../test/helpers/wait.js';
import { ToolchainCache } from '../cache/cache.js';
import { toolchainKey } from '../cache/key.js';

// The toolchain cache on a real local pool node (loop disks, its own dockerd and agent: root).
// Another node's cache dir makes the toolchains and pushes them to the real registry; the pool's
// node gets them from there for its jobs, and its agent evicts the least recently used ones
// when a job fills the workload disk.
const POOL = 'tools';
const TOKEN = randomBytes(8).toString('hex');
const MiB = 1024 ** 2;
const FILL = 6 * MiB;
const MIN_FREE_RATIO = 0.4;
let fixture: PoolFixture;
let other: { path: string; remove(): Promise<void> } | undefined;
let installerRan: string;
let repository: string;

/** What another node's installer makes: `greet` prints the test's token; fill-* are 6 MiB of noise. */
const INSTALLER = [
  'set -e; mkdir -p "$PREFIX/bin" "$PREFIX/share"',
  `if [ "$TOOL" = greet ]; then printf '#!/bin/sh\\necho "greet %s says %s"\\n' "$VERSION" ${TOKEN} > "$PREFIX/bin/greet"; chmod +x "$PREFIX/bin/greet"`,
  `else head -c ${FILL} /dev/urandom > "$PREFIX/share/noise"; fi`,
].join('\n');

before(async () => {
  fixture = await startPoolFixture();
  repository = `${fixture.registry.host}/ci/toolchains`;
  other = await tempDir('bf-other-node-');
  const producer = new ToolchainCache({ dir: other.path, registry: repository, installer: INSTALLER });
  try {
    for (const tool of ['greet', 'fill-a', 'fill-b', 'fill-c']) assert.equal((await producer.get(toolchainKey(tool, '1.0.0'))).source, 'installer');
  } finally {
    await producer.close();
  }
  installerRan = join(fixture.stateDir, 'installer-ran');
  const spec = await fixture.writeSpec(POOL, {
    name: POOL,
    nodes: 1,
    disks: { runtime: '256M', workload: '64M' },
    images: [fixture.image],
    saturation: { sampleSeconds: 0.5 },
    // The node's installer only leaves a trace: it must never run, the registry has everything.
    cache: { registry: repository, maxSize: '40M', minFreeRatio: MIN_FREE_RATIO, toolchains: ['greet@1.0.0'], installer: `echo "$TOOL" >> ${installerRan}; exit 1` },
  });
  const applied = await fixture.cli(['pool', 'apply', '-f', spec]);
  assert.equal(applied.exitCode, 0, applied.stderr);
});
after(async () => {
  await fixture?.stop();
  await other?.remove();
});

const nodeCacheDir = () => join(fixture.manager.store.paths(POOL, 'n1').workloadMount, 'toolcache');

async function nodeEntries(): Promise<Array<{ tool: string; source: string }>> {
  const cache = new ToolchainCache({ dir: nodeCacheDir() });
  return (await cache.list()).map((entry) => ({ tool: entry.tool, source: entry.source }));
}

test('a build on a pool node uses a cached toolchain another node put in the registry; the node never runs the installer', { timeout: 120_000 }, async () => {
  const script = 'greet; echo "cache=$RUNNER_TOOL_CACHE"; command -v greet; touch "$RUNNER_TOOL_CACHE/x" 2>/dev/null && echo writable || echo read-only';
  const job = await fixture.cli(['pool', 'exec', POOL, '--', 'sh', '-c', script]);
  assert.equal(job.exitCode, 0, job.stderr);
  assert.deepEqual(job.stdout.trim().split('\n'), [`greet 1.0.0 says ${TOKEN}`, 'cache=/opt/hostedtoolcache', '/opt/hostedtoolcache/greet/1.0.0/x64/bin/greet', 'read-only']);
  assert.match(job.stderr, /toolcache: greet@1\.0\.0 from the registry/);
  assert.deepEqual(await nodeEntries(), [{ tool: 'greet', source: 'registry' }]);

  // The second job finds it on the node: no download, same toolchain.
  const again = await fixture.cli(['pool', 'exec', POOL, '--', 'greet']);
  assert.equal(again.exitCode, 0, again.stderr);
  assert.equal(again.stdout.trim(), `greet 1.0.0 says ${TOKEN}`);
  assert.doesNotMatch(again.stderr, /from the registry/);
  assert.equal(existsSync(installerRan), false, 'the node ran its installer');
});

test('a job filling the workload disk past the cache threshold makes the agent evict the least recently used entries, the most recent kept', { timeout: 120_000 }, async () => {
  // Three more entries, used in this order (after greet, whose next job uses it again).
  const node = new ToolchainCache({ dir: nodeCacheDir(), registry: repository });
  try {
    for (const tool of ['fill-a', 'fill-b', 'fill-c']) {
      assert.equal((await node.get(toolchainKey(tool, '1.0.0'))).source, 'registry');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    await node.close();
  }
  // Write just enough that free space ends 1.5 entries below the threshold: two entries must go, not three.
  const disk = await statfs(fixture.manager.store.paths(POOL, 'n1').workloadMount);
  const threshold = Math.ceil(MIN_FREE_RATIO * disk.blocks * disk.bsize);
  const free = disk.bavail * disk.bsize;
  const writeMiB = Math.ceil((free - threshold + 1.5 * FILL) / MiB);
  assert.ok(writeMiB > 0 && writeMiB * MiB < free, `disk: ${free} free, threshold ${threshold}`);
  const job = await fixture.cli(['pool', 'exec', POOL, '--', 'sh', '-c', `greet && dd if=/dev/zero of=/workspace/fill bs=1M count=${writeMiB} 2>/dev/null && sync`]);
  assert.equal(job.exitCode, 0, job.stderr);

  const events = fixture.manager.store.paths(POOL, 'n1').events;
  const gc = await waitFor('the agent to evict toolchain cache entries', 30_000, async () => {
    const lines = (await readFile(events, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { event: string; removed?: string[] });
    return lines.find((line) => line.event === 'toolcache-gc');
  });
  assert.deepEqual(gc.removed?.map((path) => path.split('/').slice(-3, -2)[0]), ['fill-a', 'fill-b']);
  assert.deepEqual((await nodeEntries()).map((entry) => entry.tool).sort(), ['fill-c', 'greet']);
  const after = await statfs(nodeCacheDir());
  assert.ok(after.bavail * after.bsize >= threshold, 'free space is back above the threshold');
  assert.equal(existsSync(installerRan), false, 'the node ran its installer');
});
