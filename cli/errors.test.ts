import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { errorReport, formatErrorReport, wantsJson } from './errors.js';

test('--json is seen anywhere before --', () => {
  assert.equal(wantsJson(['image', 'inspect', 'x', '--json']), true);
  assert.equal(wantsJson(['--json', 'image']), true);
  assert.equal(wantsJson(['pool', 'exec', 'ci', '--', 'tool', '--json']), false);
  assert.equal(wantsJson(['image', 'inspect', 'x']), false);
});

test('every error is one line of text, or one JSON object with a stable code and the exit code', () => {
  const multiLine = errorReport(new BuildfleetError('integrity', 'blob x is corrupt\n  details on a second line'), 'buildfleet image copy')!;
  assert.deepEqual(multiLine, { code: 'integrity', exitCode: 6, message: 'blob x is corrupt details on a second line' });
  assert.equal(formatErrorReport(multiLine, false), 'buildfleet: error: blob x is corrupt details on a second line\n');
  assert.deepEqual(JSON.parse(formatErrorReport(multiLine, true)), { error: multiLine });

  assert.equal(errorReport({ code: 'commander.version', exitCode: 0, message: '0.1.0' }, 'buildfleet'), undefined);
  assert.equal(errorReport({ code: 'commander.helpDisplayed', exitCode: 0, message: '(outputHelp)' }, 'buildfleet'), undefined);
  assert.deepEqual(errorReport({ code: 'commander.unknownOption', exitCode: 1, message: "error: unknown option '--jsn'\n(Did you mean --json?)" }, 'buildfleet image'), {
    code: 'usage',
    exitCode: 2,
    message: "unknown option '--jsn' (Did you mean --json?) (see 'buildfleet image --help')",
  });

  const bug = errorReport(new TypeError('x is undefined'), 'buildfleet')!;
  assert.equal(bug.code, 'internal');
  assert.equal(bug.exitCode, 70);
  assert.match(formatErrorReport(bug, false), /^buildfleet: internal error: TypeError: x is undefined\n\s+at /);
  const json = formatErrorReport(bug, true);
  assert.equal(json.trimEnd().split('\n').length, 1);
  assert.match((JSON.parse(json) as { error: { stack: string } }).error.stack, /TypeError: x is undefined/);
});
