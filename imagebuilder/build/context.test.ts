import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { BuildfleetError, exitCodeFor } from '../errors.js';
import { tempDir } from '../../test/helpers/real.js';
import { contextFilter } from './dockerignore.js';
import { contextTar, prepareContext } from './context.js';

test('.dockerignore patterns follow Docker: rooted paths, parent directories, ! exceptions, last match wins', () => {
  const filter = contextFilter(['# docs stay out', '*.md', '!README.md', '/tmp/', 'docs', '!docs/keep.txt', '**/*.log', 'a?c', '[x-z].txt', ' spaced '].join('\n'));
  const excluded = (path: string) => filter.excludes(path);
  // `*.md` matches at the top only (Docker's patterns are not gitignore's).
  assert.equal(excluded('notes.md'), true);
  assert.equal(excluded('sub/notes.md'), false);
  assert.equal(excluded('README.md'), false);
  assert.equal(excluded('tmp'), true);
  assert.equal(excluded('tmp/a/b'), true, 'below an excluded directory');
  assert.equal(excluded('x/tmp/a'), false, '/tmp/ is rooted');
  assert.equal(excluded('docs/a.txt'), true);
  assert.equal(excluded('docs/keep.txt'), false, 'an exception below an excluded directory');
  assert.equal(excluded('build/deep/x.log'), true);
  assert.equal(excluded('abc'), true);
  assert.equal(excluded('a/c'), false, '? does not match /');
  assert.equal(excluded('y.txt'), true);
  assert.equal(excluded('spaced'), true, 'lines are trimmed');
  assert.equal(filter.walkExcluded, true);
  assert.equal(contextFilter('node_modules').walkExcluded, false);
  assert.equal(contextFilter(undefined).excludes('anything'), false);
});

test('the Dockerfile and .dockerignore are sent even when .dockerignore excludes them', () => {
  const filter = contextFilter('*\n', ['Dockerfile', '.dockerignore']);
  assert.equal(filter.excludes('Dockerfile'), false);
  assert.equal(filter.excludes('.dockerignore'), false);
  assert.equal(filter.excludes('src'), true);
});

async function tarMembers(stream: Readable): Promise<Map<string, { type: string; mode: number; uid: number; body: string; linkname?: string }>> {
  const members = new Map<string, { type: string; mode: number; uid: number; body: string; linkname?: string }>();
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, body, next) => {
      const chunks: Buffer[] = [];
      body.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
      body.on('end', () => {
        members.set(header.name, { type: header.type ?? 'file', mode: header.mode ?? 0, uid: header.uid ?? -1, body: Buffer.concat(chunks).toString(), ...(header.linkname && { linkname: header.linkname }) });
        next();
      });
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  stream.pipe(extract);
  await done;
  return members;
}

test('the context tar holds what .dockerignore leaves, owned by root, modes and symlinks kept', async () => {
  const dir = await tempDir();
  try {
    await mkdir(join(dir.path, 'src/deep'), { recursive: true });
    await mkdir(join(dir.path, 'scratch/keep'), { recursive: true });
    await writeFile(join(dir.path, 'Dockerfile'), 'FROM scratch\n');
    await writeFile(join(dir.path, '.dockerignore'), 'scratch\n!scratch/keep/this\n*.md\nDockerfile\n');
    await writeFile(join(dir.path, 'README.md'), 'docs');
    await writeFile(join(dir.path, 'src/deep/tool.sh'), '#!/bin/sh\n');
    await chmod(join(dir.path, 'src/deep/tool.sh'), 0o750);
    await writeFile(join(dir.path, 'scratch/junk'), 'x');
    await writeFile(join(dir.path, 'scratch/keep/this'), 'kept');
    await symlink('deep/tool.sh', join(dir.path, 'src/tool'));
    const context = await prepareContext(dir.path);
    assert.equal(context.dockerfile, 'Dockerfile');
    const members = await tarMembers(contextTar(context));
    assert.deepEqual([...members.keys()].sort(), ['.dockerignore', 'Dockerfile', 'scratch/keep/this', 'src', 'src/deep', 'src/deep/tool.sh', 'src/tool']);
    assert.equal(members.get('src/deep/tool.sh')!.mode, 0o750);
    assert.equal(members.get('src/deep/tool.sh')!.uid, 0);
    assert.equal(members.get('scratch/keep/this')!.body, 'kept');
    assert.equal(members.get('src/tool')!.type, 'symlink');
    assert.equal(members.get('src/tool')!.linkname, 'deep/tool.sh');
    assert.equal(context.bytes, 'FROM scratch\n'.length + 'scratch\n!scratch/keep/this\n*.md\nDockerfile\n'.length + '#!/bin/sh\n'.length + 'kept'.length);
  } finally {
    await dir.remove();
  }
});

test('a Dockerfile outside the context goes in under a .dockerfile. name; a missing one or a missing context is exit 2', async () => {
  const dir = await tempDir();
  try {
    await mkdir(join(dir.path, 'ctx'));
    await writeFile(join(dir.path, 'ctx/file'), 'x');
    await writeFile(join(dir.path, 'Other.dockerfile'), 'FROM scratch\nCOPY file /\n');
    const context = await prepareContext(join(dir.path, 'ctx'), join(dir.path, 'Other.dockerfile'));
    assert.match(context.dockerfile, /^\.dockerfile\.[0-9a-f]{20}$/);
    const members = await tarMembers(contextTar(context));
    assert.equal(members.get(context.dockerfile)!.body, 'FROM scratch\nCOPY file /\n');
    assert.ok(members.has('file'));

    const usage = (pattern: RegExp) => (err: unknown) => err instanceof BuildfleetError && exitCodeFor[err.kind] === 2 && pattern.test(err.message);
    await assert.rejects(prepareContext(join(dir.path, 'ctx')), usage(/^no Dockerfile at .*ctx\/Dockerfile \(give one with --file\)$/));
    await assert.rejects(prepareContext(join(dir.path, 'ctx'), join(dir.path, 'nope')), usage(/^no Dockerfile at .*nope$/));
    await assert.rejects(prepareContext(join(dir.path, 'missing')), usage(/^build context .*missing is not a directory$/));
  } finally {
    await dir.remove();
  }
});
