import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readFile, readlink, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TarHeader } from './entry.js';
import { CAP, getxattrHex, has, hardCases, LONG_NAME, LONG_TARGET, readAll, readAllBuffered, run, sha256, SPLIT_NAME, UNICODE, withTemp, writeTar } from '../../test/helpers/tar-items.js';

/** Interop with GNU tar (/bin/tar): it reads what we write, we read what it writes (posix, gnu, sparse). */

const TAR = existsSync('/bin/tar') ? '/bin/tar' : undefined;
const isRoot = process.getuid?.() === 0;
const XATTRS = ['--xattrs', '--xattrs-include=*'];

test('GNU tar lists and extracts what we write', { skip: !TAR && 'GNU tar (/bin/tar) is not installed' }, async (t) => {
  await withTemp(async (dir) => {
    const archive = join(dir, 'ours.tar');
    await writeFile(archive, await writeTar(hardCases()));
    const listing = run(TAR!, [...XATTRS, '--numeric-owner', '--full-time', '--quoting-style=literal', '-tvvf', archive]);
    for (const expected of [
      /^drwxrwxrwt\*?\s+0\/0\s+0 2023-11-14 22:13:20\.123456789 d\/$/m,
      /^-rwsr-sr-x\s+0\/0\s+5 .* d\/setid$/m,
      /^-rw-r--r--\s+300000\/4294967294\s+3 .* d\/bigids$/m,
      /^-rwxr-xr-x\*\s+0\/0\s+2 .* d\/cap\n(\s+x: .*\n)*\s+x: 20 security\.capability$/m,
      /^-rw-r--r--\s+0\/0\s+1 2023-11-14 22:13:20\.000000001 d\/times$/m,
      /^crw-rw-rw-\s+0\/0\s+1,3 .* dev\/null$/m,
      /^brw-rw----\s+0\/0\s+8,0 .* dev\/sda$/m,
      /^prw-------\s+0\/0\s+0 .* d\/fifo$/m,
      /^hrw-r--r-- .* d\/hardlink link to d\/setid$/m,
      /^-rw-r--r-- .* d\/\.wh\.\.wh\.\.opq$/m,
      new RegExp(`^lrwxrwxrwx .* d/symlink -> ${LONG_TARGET.replace(/\./g, '\\.')}$`, 'm'),
      new RegExp(` ${LONG_NAME}$`, 'm'),
      new RegExp(` ${SPLIT_NAME}$`, 'm'),
      new RegExp(` ${UNICODE}$`, 'm'),
    ]) assert.match(listing, expected);
    assert.doesNotMatch(listing, /PaxHeaders/);

    if (!isRoot) return t.diagnostic('not root: extraction checks skipped');
    const root = join(dir, 'x');
    await mkdir(root);
    run(TAR!, [...XATTRS, '--numeric-owner', '-xpf', archive, '-C', root]);
    const st = (p: string) => lstat(join(root, p), { bigint: true });
    assert.equal((await st('d/setid')).mode & 0o7777n, 0o6755n);
    assert.equal((await st('d')).mode & 0o7777n, 0o1777n);
    assert.deepEqual([(await st('d/bigids')).uid, (await st('d/bigids')).gid], [300000n, 4294967294n]);
    assert.equal((await st('d/times')).mtimeNs, 1700000000000000001n);
    assert.equal((await st('d/negative')).mtimeNs, -2500000000n);
    assert.equal((await st('d/hardlink')).ino, (await st('d/setid')).ino);
    assert.ok((await st('d/fifo')).isFIFO());
    const dev = await st('dev/sda');
    assert.ok(dev.isBlockDevice() && dev.rdev === 8n << 8n);
    assert.ok((await st('dev/null')).isCharacterDevice());
    assert.equal(await readlink(join(root, 'd/symlink')), LONG_TARGET);
    assert.equal(await readFile(join(root, LONG_NAME), 'utf8'), 'long');
    assert.equal(await readFile(join(root, SPLIT_NAME), 'utf8'), 'split');
    assert.equal(await readFile(join(root, UNICODE), 'utf8'), 'ü');
    if (!has('getfattr') || !has('setfattr')) return t.diagnostic('getfattr/setfattr (package attr) not installed: xattr check skipped');
    // Compared with what the kernel keeps for the same value set directly (a user namespace may rewrite caps).
    await writeFile(join(dir, 'ref'), '');
    run('setfattr', ['-n', 'security.capability', '-v', `0x${CAP.toString('hex')}`, join(dir, 'ref')]);
    assert.equal(getxattrHex(join(root, 'd/cap'), 'security.capability'), getxattrHex(join(dir, 'ref'), 'security.capability'));
    assert.equal(getxattrHex(join(root, 'd/cap'), 'user.bin'), 'fffe000a3d20');
    assert.equal(getxattrHex(join(root, 'd'), 'user.dir'), Buffer.from('on a dir').toString('hex'));
  });
});

/** Writes `bytes` at each offset of a file that is otherwise holes. */
async function sparseFile(path: string, size: number, offsets: number[]): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  const handle = await open(path, 'r+');
  try {
    for (const offset of offsets) await handle.write(Buffer.from(`data@${offset}`), 0, undefined, offset);
  } finally {
    await handle.close();
  }
}

async function walk(root: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(join(root, prefix))) {
    const path = prefix ? `${prefix}/${name}` : name;
    out.push(path);
    if ((await lstat(join(root, path))).isDirectory()) out.push(...(await walk(root, path)));
  }
  return out;
}

/** Every entry matches the file system it was made from; every file is in the archive. */
async function checkAgainstTree(root: string, entries: Array<{ header: TarHeader; body: Buffer }>, subsecond: boolean): Promise<void> {
  const paths = entries.map((e) => e.header.path).filter((p) => p !== '');
  assert.deepEqual([...paths].sort(), (await walk(root)).sort());
  for (const { header, body } of entries) {
    if (header.path === '') continue;
    const full = join(root, header.path);
    const st = await lstat(full, { bigint: true });
    assert.equal(header.mode, Number(st.mode & 0o7777n), header.path);
    assert.deepEqual([header.uid, header.gid], [Number(st.uid), Number(st.gid)], header.path);
    const ns = BigInt(header.mtime.sec) * 1_000_000_000n + BigInt(header.mtime.nsec);
    assert.equal(ns, subsecond ? st.mtimeNs : (st.mtimeNs / 1_000_000_000n) * 1_000_000_000n, header.path);
    if (header.type === 'file') {
      assert.ok(st.isFile(), header.path);
      assert.equal(header.size, Number(st.size), header.path);
      assert.equal(sha256(body), sha256(await readFile(full)), header.path);
    } else if (header.type === 'hardlink') {
      assert.equal((await stat(join(root, header.linkname!))).ino, Number(st.ino), header.path);
    } else if (header.type === 'symlink') assert.equal(header.linkname, await readlink(full));
    else assert.equal(header.type, st.isDirectory() ? 'directory' : st.isFIFO() ? 'fifo' : '?', header.path);
  }
}

test('tars GNU tar creates read correctly: posix with xattrs, gnu, long names, hardlinks, sparse', { skip: !TAR && 'GNU tar (/bin/tar) is not installed' }, async (t) => {
  await withTemp(async (dir) => {
    const root = join(dir, 'tree');
    await mkdir(join(root, 'd'), { recursive: true });
    await mkdir(join(root, LONG_NAME, '..'), { recursive: true });
    await writeFile(join(root, 'd/plain'), 'plain content\n');
    await writeFile(join(root, LONG_NAME), 'long');
    await writeFile(join(root, UNICODE), 'ü');
    await link(join(root, 'd/plain'), join(root, 'd/hardlink'));
    await link(join(root, 'd/plain'), join(root, LONG_NAME + '-link'));
    await symlink(LONG_TARGET, join(root, 'd/symlink'));
    await sparseFile(join(root, 'd/sparse'), 10 << 20, [0, 5_000_000, (10 << 20) - 20]);
    // Over 25 extents: old GNU headers need extension blocks.
    await sparseFile(join(root, 'd/many'), 8 << 20, Array.from({ length: 30 }, (_, i) => i * 262144 + 1000));
    await writeFile(join(root, 'd/caps'), '#!/bin/sh\n');
    const xattrs = has('setfattr');
    if (xattrs) {
      run('setfattr', ['-n', 'user.test', '-v', '0x00ff01', join(root, 'd/caps')]);
      if (has('setcap')) run('setcap', ['cap_net_raw+ep', join(root, 'd/caps')]);
      else run('setfattr', ['-n', 'security.capability', '-v', `0x${CAP.toString('hex')}`, join(root, 'd/caps')]);
    } else t.diagnostic('setfattr (package attr) not installed: xattr checks skipped');

    for (const [label, options, subsecond] of [
      ['posix', ['--format=posix', ...XATTRS], true],
      ['gnu', ['--format=gnu'], false],
      ['posix sparse 0.0', ['--format=posix', '--sparse-version=0.0'], true],
      ['posix sparse 0.1', ['--format=posix', '--sparse-version=0.1'], true],
    ] as const) {
      const archive = join(dir, 'gnu.tar');
      run(TAR!, ['--sparse', '-cf', archive, ...options, '-C', root, '.']);
      assert.ok((await stat(archive)).size < 2 << 20, `${label}: sparse files were stored sparse`);
      const entries = await readAll(await readFile(archive));
      assert.deepEqual((await readAllBuffered(await readFile(archive))).map((e) => e.body), entries.map((e) => e.body), `${label}: buffer() gives what the stream gives`);
      await checkAgainstTree(root, entries, subsecond);
      const sparse = entries.find((e) => e.header.path === 'd/sparse')!;
      assert.equal(sparse.header.size, 10 << 20, label);
      assert.equal(sparse.body.subarray(5_000_000, 5_000_012).toString(), 'data@5000000', label);
      if (label === 'posix' && xattrs) {
        const caps = entries.find((e) => e.header.path === 'd/caps')!.header.xattrs;
        assert.equal(caps.get('user.test')?.toString('hex'), '00ff01');
        assert.equal(caps.get('security.capability')?.toString('hex'), getxattrHex(join(root, 'd/caps'), 'security.capability'));
      }
    }
  });
});
