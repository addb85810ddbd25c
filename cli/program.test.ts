import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildProgram, firstOperand } from './program.js';
import { runCli } from '../test/helpers/real.js';

const ALL = ['image', 'pool', 'agent', 'quickstart', 'bench', 'cache', 'kube'];

test('a command registers its own group only; no group named, or one unknown, registers them all', async () => {
  const names = async (words?: string[]) => (await buildProgram(words ? { words } : {})).commands.map((command) => command.name());
  assert.deepEqual(await names(['cache', 'get', 'node', '20.11.0']), ['cache']);
  // Global options and their values come before the group: --platform's value is no group name.
  assert.deepEqual(await names(['--platform', 'linux/arm64', '-q', '--insecure=reg:5000', 'cache', 'get', 'node', '1']), ['cache']);
  assert.deepEqual(await names(['--json', 'agent', 'run']), ['agent']);
  assert.deepEqual(await names([]), ALL);
  assert.deepEqual(await names(['--help']), ALL);
  assert.deepEqual(await names(['help', 'cache']), ALL);
  assert.deepEqual(await names(['imgae', 'copy']), ALL, 'an unknown command is reported with every command known');
  assert.deepEqual(await names(), ALL);
  const program = await buildProgram();
  assert.equal(firstOperand(program, ['--creds', 'cache', 'pool']), 'pool', "--creds takes 'cache' as its value");
  assert.equal(firstOperand(program, ['--', 'cache']), undefined);
});

test('--help still lists every command; a command\'s help and errors work when only its group is loaded', { timeout: 60_000 }, async () => {
  const top = await runCli(['--help']);
  assert.equal(top.exitCode, 0);
  for (const name of ALL) assert.match(top.stdout, new RegExp(`^  ${name}\\b`, 'm'), name);
  const get = await runCli(['cache', 'get', '--help']);
  assert.equal(get.exitCode, 0);
  assert.match(get.stdout, /<tool>/);
  const bad = await runCli(['cache', 'get', 'Bad Tool', '1', '--dir', '/nonexistent-buildfleet']);
  assert.equal(bad.exitCode, 2);
  assert.match(bad.stderr, /^buildfleet: error: invalid tool name "Bad Tool"/);
});
