import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { describeParseError, lineAndColumn } from './parse-error.js';

function thrownBy(parse: () => unknown): unknown {
  try {
    parse();
  } catch (err) {
    return err;
  }
  throw new Error('expected a parse error');
}

test('a YAML error becomes one line with its line, column and reason, without the code frame', () => {
  const text = 'name: ci\n\tnodes: 1\n';
  const err = thrownBy(() => parseYaml(text));
  assert.match((err as Error).message, /\n/, 'yaml itself spans lines');
  assert.equal(describeParseError(err, text), 'line 2, column 1: Tabs are not allowed as indentation');
  const nested = 'a: b: c\n';
  assert.equal(describeParseError(thrownBy(() => parseYaml(nested)), nested), 'line 1, column 4: Nested mappings are not allowed in compact mappings');
});

test('a JSON error says where (line and column, not an offset) and drops the quoted text', () => {
  const text = '{\n  "auths": {\n    "x": y\n  }\n}\n';
  const err = thrownBy(() => JSON.parse(text));
  const line = describeParseError(err, text);
  assert.doesNotMatch(line, /\n/);
  assert.match(line, /^line 3, column 10: Unexpected token 'y'$/);
  const unfinished = '{\n  "auths": {\n';
  assert.equal(describeParseError(thrownBy(() => JSON.parse(unfinished)), unfinished), "line 3, column 1: Expected property name or '}'");
  assert.equal(describeParseError(thrownBy(() => JSON.parse('')), ''), 'line 1, column 1: Unexpected end of JSON input');
  const early = '{"a": x, "padding": "to be cut"}';
  assert.equal(describeParseError(thrownBy(() => JSON.parse(early)), early), "line 1, column 7: Unexpected token 'x'");
  assert.equal(describeParseError(thrownBy(() => JSON.parse('[1, x]')), '[1, x]'), "line 1, column 5: Unexpected token 'x'");
  const trailing = '{}\n  x';
  assert.match(describeParseError(thrownBy(() => JSON.parse(trailing)), trailing), /^line 2, column 3: Unexpected non-whitespace character after JSON$/);
});

test('offsets map to 1-based lines and columns', () => {
  assert.deepEqual(lineAndColumn('ab\ncd', 0), { line: 1, column: 1 });
  assert.deepEqual(lineAndColumn('ab\ncd', 4), { line: 2, column: 2 });
  assert.deepEqual(lineAndColumn('ab', 99), { line: 1, column: 3 });
});
