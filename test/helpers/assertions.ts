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
