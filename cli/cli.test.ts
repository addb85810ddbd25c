import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot, runCli } from '../test/helpers/real.js';

test('--version prints the package version', { timeout: 60_000 }, async () => {
  const { version } = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const result = await runCli(['--version']);
  assert.equal(result.exitCode, 0);
  assert.equal(result.stdout.trim(), version);
});

test('--help explains the commands and the reference forms', { timeout: 60_000 }, async () => {
  const top = await runCli(['--help']);
  assert.equal(top.exitCode, 0);
  assert.match(top.stdout, /image/);
  assert.match(top.stdout, /--json/);
  const copy = await runCli(['image', 'copy', '--help']);
  assert.equal(copy.exitCode, 0);
  assert.match(copy.stdout, /<src>/);
  const inspect = await runCli(['image', 'inspect', '--help']);
  assert.match(inspect.stdout, /docker-archive:PATH/);
});

test('usage errors exit 2 and say what is wrong', { timeout: 60_000 }, async () => {
  const missing = await runCli(['image', 'copy', 'only-one-arg']);
  assert.equal(missing.exitCode, 2);
  assert.match(missing.stderr, /missing required argument 'dst'/);
  const badFlag = await runCli(['image', 'copy', '--concurrency', 'zero', 'a', 'b']);
  assert.equal(badFlag.exitCode, 2);
  assert.match(badFlag.stderr, /--concurrency must be a positive whole number/);
  const unknown = await runCli(['image', 'frobnicate']);
  assert.notEqual(unknown.exitCode, 0);
  assert.match(unknown.stderr, /unknown command/);
});
