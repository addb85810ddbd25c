import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readFile, truncate, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { execa } from 'execa';
import tar from 'tar-stream';
import { BuildfleetError } from '../errors.js';
import {
  encodeTarHeader,
  indexTar,
  openMemberStream,
  parseTarNumber,
  readMember,
  resolveMember,
  tarEnd,
  tarPadding,
} from './tar-index.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'buildfleet-tarindex-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function packToFile(name: string, fill: (pack: tar.Pack) => void): Promise<string> {
  const pack = tar.pack();
  fill(pack);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const path = join(dir, name);
  await writeFile(path, Buffer.concat(chunks));
  return path;
}

async function memberText(path: string, name: string): Promise<string> {
  const index = await indexTar(path);
  const member = resolveMember(index, name);
  assert.ok(member, `${name} in ${path}`);
  return text(openMemberStream(index, member));
}

test('indexes ustar names with prefix, PAX paths, directories and links made by tar-stream', async () => {
  const prefixed = `${'d'.repeat(90)}/${'e'.repeat(60)}/file.txt`; // > 100 bytes: ustar prefix
  const paxName = `${'p'.repeat(120)}/${'q'.repeat(120)}.txt`; // cannot split: PAX path record
  const path = await packToFile('a.tar', (pack) => {
    pack.entry({ name: 'dir', type: 'directory' });
    pack.entry({ name: 'dir/one.txt' }, 'one');
    pack.entry({ name: prefixed }, 'prefixed');
    pack.entry({ name: paxName }, 'pax');
    pack.entry({ name: 'empty' }, '');
    pack.entry({ name: 'link', type: 'symlink', linkname: 'dir/one.txt' });
    pack.entry({ name: 'dir/up', type: 'symlink', linkname: '../empty' });
    pack.entry({ name: 'hard', type: 'link', linkname: 'dir/one.txt' });
    pack.entry({ name: 'big.bin' }, Buffer.alloc(70_000, 7));
  });
  const index = await indexTar(path);
  assert.equal(index.members.get('dir')?.type, 'directory');
  assert.equal(await memberText(path, 'dir/one.txt'), 'one');
  assert.equal(await memberText(path, './dir/one.txt'), 'one');
  assert.equal(await memberText(path, prefixed), 'prefixed');
  assert.equal(await memberText(path, paxName), 'pax');
  assert.equal(await memberText(path, 'empty'), '');
  assert.equal(await memberText(path, 'link'), 'one');
  assert.equal(await memberText(path, 'hard'), 'one');
  assert.equal(resolveMember(index, 'dir/up')?.name, 'empty');
  const big = resolveMember(index, 'big.bin')!;
  assert.equal(big.size, 70_000);
  assert.deepEqual(await readMember(index, big), Buffer.alloc(70_000, 7));
  assert.equal(resolveMember(index, 'missing'), undefined);
});

test('reads GNU long names and links written by GNU tar', async () => {
  const root = join(dir, 'gnu');
  const long = `${'x'.repeat(150)}/${'y'.repeat(120)}`;
  await mkdir(join(root, long), { recursive: true });
  await writeFile(join(root, long, 'data.txt'), 'gnu long name');
  await execa('ln', ['-s', `${long}/data.txt`, join(root, 'tolong')]);
  const path = join(dir, 'gnu.tar');
  await execa('tar', ['--format=gnu', '-C', root, '-cf', path, '.']);
  const index = await indexTar(path);
  assert.equal(index.members.get(`${long}/data.txt`)?.size, 13);
  assert.equal(index.members.get('tolong')?.linkname, `${long}/data.txt`);
  assert.equal(await memberText(path, 'tolong'), 'gnu long name');
});

test('decodes base-256 sizes, and writes headers GNU tar reads', async () => {
  const header = encodeTarHeader({ name: 'f', size: 5, type: 'file' });
  header[124] = 0x80;
  header.fill(0, 125, 135);
  header[135] = 5;
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  const path = join(dir, 'b256.tar');
  await writeFile(path, Buffer.concat([header, Buffer.from('hello'), tarPadding(5), tarEnd]));
  assert.equal(await memberText(path, 'f'), 'hello');
  const tvf = await execa('tar', ['tvf', path]);
  assert.match(tvf.stdout, /\s5 .* f$/);

  const huge = encodeTarHeader({ name: 'huge', size: 9 * 1024 ** 3, type: 'file' });
  assert.equal(parseTarNumber(huge, 124, 12), 9 * 1024 ** 3);
  assert.equal(parseTarNumber(encodeTarHeader({ name: 'd', size: 0, type: 'directory' }), 124, 12), 0);
});

test('a truncated archive fails with one format error naming the file', async () => {
  const path = await packToFile('t.tar', (pack) => {
    pack.entry({ name: 'a' }, Buffer.alloc(3000, 1));
    pack.entry({ name: 'b' }, 'b');
  });
  const whole = await readFile(path);
  for (const cut of [1000, 512 + 3072 + 100, whole.length - 1024]) {
    const cutPath = join(dir, `cut-${cut}.tar`);
    await writeFile(cutPath, whole.subarray(0, cut));
    await assert.rejects(indexTar(cutPath), (err: unknown) => {
      assert.ok(err instanceof BuildfleetError);
      assert.equal(err.kind, 'format');
      assert.ok(err.message.startsWith(`${cutPath}: truncated tar archive`), err.message);
      assert.ok(!err.message.includes('\n'));
      return true;
    });
  }
  await truncate(join(dir, 'cut-1000.tar'), 0);
  await assert.rejects(indexTar(join(dir, 'cut-1000.tar')), /empty file, not a tar archive/);
});

test('garbage and gzip input are told apart from truncation', async () => {
  const garbage = join(dir, 'garbage.tar');
  await writeFile(garbage, Buffer.alloc(2048, 0x41));
  await assert.rejects(indexTar(garbage), /not a tar archive or corrupt tar header at byte 0/);
  const gz = join(dir, 'x.tar.gz');
  await writeFile(gz, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(1020)]));
  await assert.rejects(indexTar(gz), /is gzip-compressed/);
  await assert.rejects(indexTar(join(dir, 'nope.tar')), (err: unknown) => err instanceof BuildfleetError && err.kind === 'not-found');
});

test('link loops and links out of the archive resolve to nothing', async () => {
  const path = await packToFile('loops.tar', (pack) => {
    pack.entry({ name: 'a', type: 'symlink', linkname: 'b' });
    pack.entry({ name: 'b', type: 'symlink', linkname: 'a' });
    pack.entry({ name: 'out', type: 'symlink', linkname: '../../etc/passwd' });
  });
  const index = await indexTar(path);
  assert.equal(resolveMember(index, 'a'), undefined);
  assert.equal(resolveMember(index, 'out'), undefined);
});
