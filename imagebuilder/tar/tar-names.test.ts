import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodeName, encodeName } from './fields.js';
import { file, h, item, readAll, readAllBuffered, withTemp, writeTar, type Item } from '../../test/helpers/tar-items.js';

/**
 * On Linux a name is bytes, not text: names and link targets that are not UTF-8 go through the
 * reader and the writer byte for byte (PAX records where ustar cannot hold them).
 */

const bytes = (...parts: Array<string | number[]>): Buffer => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

/** Byte strings that are not UTF-8, and some that are, next to each other. */
const NAMES: Buffer[] = [
  bytes('bad', [0xff], 'name'),
  bytes([0x80]),
  bytes('é', [0xc3]), // a two-byte sequence cut short
  bytes([0xed, 0xb3, 0xbf]), // U+DCFF encoded as UTF-8 (CESU): not UTF-8, must not become that surrogate
  bytes([0xc0, 0xaf]), // overlong "/"
  bytes([0xf4, 0x90, 0x80, 0x80]), // above U+10FFFF
  bytes([0xf4, 0x8f, 0xbf, 0xbf]), // U+10FFFF itself: valid
  bytes('🚀', [0xfe], '日本'),
  bytes('\\xff'), // the text an escaping decoder would make of 0xff: a different name
  bytes('plain-ascii'),
];

test('decodeName/encodeName: every byte string survives, different bytes give different names, UTF-8 stays as it is', () => {
  const seen = new Map<string, string>();
  const check = (raw: Buffer) => {
    const name = decodeName(raw);
    assert.deepEqual(encodeName(name), raw, raw.toString('hex'));
    const other = seen.get(name);
    assert.ok(other === undefined || other === raw.toString('hex'), `${raw.toString('hex')} and ${other} decode alike`);
    seen.set(name, raw.toString('hex'));
  };
  for (const raw of NAMES) check(raw);
  for (let i = 0; i < 5000; i++) check(randomBytes(1 + (i % 12)));
  assert.equal(decodeName(bytes('héllo 🚀')), 'héllo 🚀');
  assert.equal(decodeName(bytes('bad', [0xff], 'name')), 'bad\udcffname');
  assert.throws(() => encodeName('lone \ud800 high surrogate'), /lone surrogate/);
});

/** A layer with non-UTF-8 names in every role: files, a directory, a symlink target, a hardlink, whiteouts. */
function nonUtf8Items(): Item[] {
  const n = (raw: Buffer) => decodeName(raw);
  const dir = n(bytes('dir', [0xfe]));
  const target = n(bytes('target', [0xff]));
  const long = n(bytes('x'.repeat(150), [0xff]));
  return [
    item(h(dir, 'directory')),
    file(`${dir}/${target}`, 'content'),
    file(long, 'long name'),
    item(h(n(bytes('link', [0xfd])), 'symlink', { mode: 0o777, linkname: `${dir}/${target}` })),
    item(h(n(bytes('abs', [0x80])), 'symlink', { mode: 0o777, linkname: n(bytes('/nowhere/', [0xc3], 'x'.repeat(120))) })),
    item(h(n(bytes('hard', [0xfc])), 'hardlink', { linkname: `${dir}/${target}` })),
    item(h(`${dir}/.wh.${n(bytes('gone', [0xff]))}`, 'file')),
    ...NAMES.map((raw) => file(`names/${n(raw)}`, raw)),
  ];
}

test('non-UTF-8 names and link targets round-trip through writer and reader byte for byte', async () => {
  const items = nonUtf8Items();
  const archive = await writeTar(items);
  for (const read of [await readAll(archive), await readAllBuffered(archive)]) {
    assert.deepEqual(read.map((i) => i.header), items.map((i) => i.header));
    assert.deepEqual(read.map((i) => i.body), items.map((i) => i.body));
  }
  assert.deepEqual(await writeTar(await readAll(archive)), archive, 'written again, the same bytes');
  // Each name's bytes are in the archive (PAX records: ustar fields are ASCII only, as Go writes them).
  for (const raw of [bytes('dir', [0xfe], '/target', [0xff]), bytes('x'.repeat(150), [0xff]), bytes('/nowhere/', [0xc3], 'x'.repeat(120)), bytes('dir', [0xfe], '/.wh.gone', [0xff])]) {
    assert.ok(archive.includes(raw), raw.toString('hex'));
  }
});

const TAR = existsSync('/bin/tar') ? '/bin/tar' : undefined;

function tar(args: string[]): void {
  const result = spawnSync(TAR!, args, { env: { ...process.env, LC_ALL: 'C' } });
  assert.equal(result.status, 0, `tar ${args.join(' ')}: ${result.stderr}`);
}

test('GNU tar: we read the raw bytes it writes (gnu, ustar and posix formats), and it extracts our names as the same bytes', { skip: !TAR && 'GNU tar (/bin/tar) is not installed' }, async () => {
  await withTemp(async (tmp) => {
    const src = Buffer.from(join(tmp, 'src'));
    const path = (...parts: Buffer[]) => Buffer.concat([src, ...parts.flatMap((p) => [Buffer.from('/'), p])]);
    await mkdir(src);
    const name = bytes('bad', [0xff], 'name');
    const target = bytes('/t/', [0xfe, 0x80]);
    await writeFile(path(name), 'x\n');
    await symlink(target, path(bytes('sym', [0xc3])));
    await link(path(name), path(bytes('hard', [0xff])));
    for (const format of ['gnu', 'ustar', 'posix']) {
      const archive = join(tmp, `${format}.tar`);
      tar([`--format=${format}`, '--sort=name', '-cf', archive, '-C', src.toString('latin1'), '.']);
      const read = await readAll(await readFile(archive));
      const byPath = new Map(read.map((i) => [i.header.path, i.header]));
      assert.equal(byPath.get(decodeName(name))?.type, 'file', format);
      assert.deepEqual(encodeName(byPath.get(decodeName(bytes('sym', [0xc3])))!.linkname!), target, format);
      assert.equal(byPath.get(decodeName(bytes('hard', [0xff])))?.linkname, decodeName(name), format);
    }

    const ours = join(tmp, 'ours.tar');
    await writeFile(ours, await writeTar(nonUtf8Items().filter((i) => !i.header.path.includes('.wh.'))));
    const out = join(tmp, 'out');
    await mkdir(out);
    tar(['-xf', ours, '-C', out]);
    const outDir = Buffer.from(out);
    const names = (await readdir(outDir, { encoding: 'buffer' })).map((b) => b.toString('hex')).sort();
    assert.deepEqual(names, [bytes('abs', [0x80]), bytes('dir', [0xfe]), bytes('hard', [0xfc]), bytes('link', [0xfd]), bytes('names'), bytes('x'.repeat(150), [0xff])].map((b) => b.toString('hex')).sort());
    const at = (...parts: Buffer[]) => Buffer.concat([outDir, ...parts.flatMap((p) => [Buffer.from('/'), p])]);
    assert.deepEqual(await readlink(at(bytes('link', [0xfd])), { encoding: 'buffer' }), bytes('dir', [0xfe], '/target', [0xff]));
    assert.deepEqual(await readFile(at(bytes('hard', [0xfc]))), Buffer.from('content'));
    const listed = (await readdir(at(bytes('names')), { encoding: 'buffer' })).map((b) => b.toString('hex')).sort();
    assert.deepEqual(listed, NAMES.map((b) => b.toString('hex')).sort());
  });
});
