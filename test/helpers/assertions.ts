import assert from 'node:assert/strict';
import { BuildfleetError } from '../../imagebuilder/errors.js';

/**
 * For `assert.rejects(promise, errorOf(kind, pattern))`: the error is a BuildfleetError of that
 * kind, its message matches `pattern`, and it is one line.
 */
export function errorOf(kind: BuildfleetError['kind'], pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BuildfleetError, `expected a BuildfleetError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    assert.match(err.message, pattern);
    assert.doesNotMatch(err.message, /\n/, 'one line');
    return true;
  };
}

/**
 * A CLI run that failed as a user should see it: the exit code, and exactly one line on stderr,
 * `buildfleet: error: ...`, matching `pattern`.
 */
export function oneClearLine(result: { exitCode: number; stderr: string }, exitCode: number, pattern: RegExp): void {
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  assert.equal(result.exitCode, exitCode, `exit code (stderr: ${result.stderr})`);
  assert.equal(lines.length, 1, `exactly one line on stderr, got: ${result.stderr}`);
  assert.match(lines[0]!, /^buildfleet: error: /);
  assert.match(lines[0]!, pattern);
}
