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

test('usage errors exit 2 with one line saying what is wrong', { timeout: 60_000 }, async () => {
  const cases: Array<[string[], RegExp]> = [
    [['image', 'copy', 'only-one-arg'], /^buildfleet: error: missing required argument 'dst' \(see 'buildfleet image copy --help'\)$/],
    [['image', 'copy', '--concurrency', 'zero', 'a', 'b'], /^buildfleet: error: --concurrency must be a positive whole number, got "zero"$/],
    [['image', 'frobnicate'], /^buildfleet: error: unknown command 'frobnicate' \(see 'buildfleet image --help'\)$/],
    [['image', 'inspect', '--bogus', 'x'], /^buildfleet: error: unknown option '--bogus' \(see 'buildfleet image inspect --help'\)$/],
    [['--jsn', 'image'], /^buildfleet: error: unknown option '--jsn' \(Did you mean --json\?\)/],
  ];
  for (const [args, line] of cases) {
    const result = await runCli(args);
    assert.equal(result.exitCode, 2, args.join(' '));
    assert.equal(result.stdout, '');
    assert.match(result.stderr, line);
    assert.equal(result.stderr.trim().split('\n').length, 1, `one line: ${result.stderr}`);
  }
});

test('with --json anywhere, an error is one JSON object on stderr with a stable code and the exit code', { timeout: 60_000 }, async () => {
  const cases: Array<[string[], { code: string; exitCode: number; message: RegExp }]> = [
    [['--json', 'image', 'copy', 'only-one-arg'], { code: 'usage', exitCode: 2, message: /missing required argument 'dst'/ }],
    [['image', 'copy', 'only-one-arg', '--json'], { code: 'usage', exitCode: 2, message: /missing required argument 'dst'/ }],
    [['image', '--json', 'frobnicate'], { code: 'usage', exitCode: 2, message: /unknown command 'frobnicate'/ }],
    [['--json', 'image', 'inspect', '--bogus', 'x'], { code: 'usage', exitCode: 2, message: /unknown option '--bogus'/ }],
    [['--json', 'image'], { code: 'usage', exitCode: 2, message: /missing command/ }],
    [['--json', 'image', 'inspect', 'Bad/Ref'], { code: 'reference', exitCode: 2, message: /invalid image reference "Bad\/Ref"/ }],
    [['image', 'inspect', 'oci:/nonexistent/buildfleet-layout', '--json'], { code: 'not-found', exitCode: 3, message: /no such directory/ }],
  ];
  for (const [args, expected] of cases) {
    const result = await runCli(args);
    assert.equal(result.exitCode, expected.exitCode, args.join(' '));
    assert.equal(result.stderr.trim().split('\n').length, 1, `one line: ${result.stderr}`);
    const { error } = JSON.parse(result.stderr) as { error: { code: string; exitCode: number; message: string } };
    assert.deepEqual(Object.keys(error).sort(), ['code', 'exitCode', 'message']);
    assert.equal(error.code, expected.code);
    assert.equal(error.exitCode, expected.exitCode);
    assert.match(error.message, expected.message);
  }
  // After `--` it is an argument, not the flag.
  const literal = await runCli(['image', 'inspect', '--', '--json']);
  assert.equal(literal.exitCode, 2);
  assert.match(literal.stderr, /^buildfleet: error: /);
  // Help and version still work and exit 0.
  assert.equal((await runCli(['--json', '--version'])).exitCode, 0);
  const help = await runCli(['image', 'copy', '--help', '--json']);
  assert.equal(help.exitCode, 0);
  assert.match(help.stdout, /<src>/);
});
