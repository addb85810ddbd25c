import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPoolSpec } from './pool-spec.js';
import { errorOf } from '../../test/helpers/assertions.js';

test('a spec file that does not parse fails with one line: file, line, column and what is wrong', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'buildfleet-spec-'));
  try {
    const yaml = join(dir, 'bad.yaml');
    await writeFile(yaml, 'name: ci\nnodes: 1\ndisks:\n\truntime: 2G\n');
    await assert.rejects(loadPoolSpec(yaml), errorOf('usage', /bad\.yaml: not valid YAML or JSON at line 4, column 1: Tabs are not allowed as indentation$/));
    const json = join(dir, 'bad.json');
    await writeFile(json, '{\n  "name": "ci",\n  "nodes": [1,\n}\n');
    await assert.rejects(loadPoolSpec(json), errorOf('usage', /bad\.json: not valid YAML or JSON at line \d+, column \d+: \w.*$/));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
