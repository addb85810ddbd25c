import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_PATH, imagePathOf, parseToolchainRef, toolcacheEnv } from './toolcache.js';
import { toolcacheGcTarget } from '../agent/toolcache-gc.js';

test('a job sees the cache at the runners\' path, the declared toolchains first on PATH, in the spec\'s order', () => {
  assert.deepEqual(toolcacheEnv(['node/20.11.0/x64', 'go/1.22.1/x64'], '/usr/bin:/bin'), [
    'RUNNER_TOOL_CACHE=/opt/hostedtoolcache',
    'BUILDFLEET_TOOLCACHE=/opt/hostedtoolcache',
    'PATH=/opt/hostedtoolcache/node/20.11.0/x64/bin:/opt/hostedtoolcache/go/1.22.1/x64/bin:/usr/bin:/bin',
  ]);
  // No declared toolchain: the image's PATH stays the image's.
  assert.deepEqual(toolcacheEnv([], undefined), ['RUNNER_TOOL_CACHE=/opt/hostedtoolcache', 'BUILDFLEET_TOOLCACHE=/opt/hostedtoolcache']);
  assert.equal(toolcacheEnv(['node/20.11.0/x64'], undefined).at(-1), `PATH=/opt/hostedtoolcache/node/20.11.0/x64/bin:${DEFAULT_PATH}`);
  assert.equal(imagePathOf(['HOME=/root', 'PATH=/opt/bin:/bin']), '/opt/bin:/bin');
  assert.equal(imagePathOf(null), undefined);
  assert.deepEqual(parseToolchainRef('python@3.12.1+local'), { tool: 'python', version: '3.12.1+local' });
});

test('the agent collects the cache only below its free-space share, up to that share and down to the size limit', () => {
  const cache = { maxSize: 500, minFreeRatio: 0.1 };
  assert.equal(toolcacheGcTarget(cache, { freeBytes: 100, totalBytes: 1000 }), undefined);
  assert.deepEqual(toolcacheGcTarget(cache, { freeBytes: 99, totalBytes: 1000 }), { maxSize: 500, minFree: 100 });
});
