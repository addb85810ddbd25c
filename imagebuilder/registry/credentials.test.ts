import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveCredentials } from './credentials.js';
import { endpointFor } from './options.js';
import { errorOf } from '../../test/helpers/assertions.js';

test('an --authfile that is not JSON fails with one line naming the file, line, column and what is wrong', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'buildfleet-authfile-'));
  try {
    const authFile = join(dir, 'config.json');
    await writeFile(authFile, '{\n  "auths": {\n    "127.0.0.1:5000": { auth: "eDp5" }\n  }\n}\n');
    const endpoint = endpointFor('127.0.0.1:5000', { authFile });
    await assert.rejects(
      resolveCredentials(endpoint, { authFile }),
      errorOf('format', new RegExp(`^docker config ${authFile.replace(/[.]/g, '\\.')} is not valid JSON at line 3, column 25: Expected property name or '}'$`)),
    );
    // V8 quotes the text around an unexpected token, newlines and all: none of it is kept.
    await writeFile(authFile, '{\n  "auths": {\n    "127.0.0.1:5000": {"auth": x}\n  }\n}\n');
    await assert.rejects(
      resolveCredentials(endpoint, { authFile }),
      errorOf('format', new RegExp(`^docker config ${authFile.replace(/[.]/g, '\\.')} is not valid JSON at line 3, column 32: Unexpected token 'x'$`)),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
