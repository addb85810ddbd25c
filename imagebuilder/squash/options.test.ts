import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BuildfleetError, exitCodeFor } from '../errors.js';
import { squashOptionsFrom } from './options.js';

const usage = (message: string) => (err: unknown) => err instanceof BuildfleetError && exitCodeFor[err.kind] === 2 && err.message === message;

test('squash options: a level the compression does not take is a usage error', () => {
  const base = { layers: 1, fromLayer: 1 };
  assert.throws(() => squashOptionsFrom({ ...base, compression: 'none', level: 1 }, {}), usage('--level needs --compression gzip or zstd'));
  assert.throws(() => squashOptionsFrom({ ...base, compression: 'gzip', level: 10 }, {}), usage('--level for gzip must be 1 to 9, got 10'));
  assert.throws(() => squashOptionsFrom({ ...base, compression: 'zstd', level: 20 }, {}), usage('--level for zstd must be 1 to 19, got 20'));
  assert.deepEqual(squashOptionsFrom({ ...base, compression: 'zstd', level: 19 }, {}), { ...base, compression: 'zstd', level: 19 });
});

test('squash options: SOURCE_DATE_EPOCH from the environment unless given, checked', () => {
  const base = { layers: 4, fromLayer: 2, compression: 'gzip' as const };
  assert.deepEqual(squashOptionsFrom(base, {}), base, 'no epoch, no key');
  assert.deepEqual(squashOptionsFrom(base, { SOURCE_DATE_EPOCH: '' }), base, 'empty counts as unset');
  assert.equal(squashOptionsFrom(base, { SOURCE_DATE_EPOCH: '1700000000' }).sourceDateEpoch, 1700000000);
  assert.equal(squashOptionsFrom({ ...base, sourceDateEpoch: 0 }, { SOURCE_DATE_EPOCH: '5' }).sourceDateEpoch, 0, 'the flag wins, 0 included');
  assert.throws(() => squashOptionsFrom(base, { SOURCE_DATE_EPOCH: 'yesterday' }), usage('SOURCE_DATE_EPOCH must be a whole number >= 0, got "yesterday"'));
});
