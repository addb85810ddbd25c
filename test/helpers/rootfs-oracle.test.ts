import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { tempDir } from './real.js';
import { collectRootfs, diffRootfs, printablePath, rootfsPath } from './rootfs-oracle.js';

/** The oracle compares names as bytes: no two names may come out as the same path (no daemon needed). */
test('the oracle keeps every name apart, byte for byte, and prints the bytes that are not UTF-8', async () => {
  const work = await tempDir();
  try {
    const root = Buffer.from(work.path);
    const at = (...names: Buffer[]) => Buffer.concat([root, ...names.flatMap((n) => [Buffer.from('/'), n])]);
    const names = [Buffer.from([0xff]), Buffer.from('\\xff'), Buffer.from('é'), Buffer.from([0xc3]), Buffer.from('💀'), Buffer.from([0xf0, 0x9f, 0x92])];
    for (const name of names) await writeFile(at(name), name);
    await mkdir(at(Buffer.from('dir-é')));
    await writeFile(at(Buffer.from('dir-é'), Buffer.from([0x61, 0xfe])), 'in');
    await symlink(Buffer.from([0x74, 0xfd]), at(Buffer.from('link')));
    const entries = await collectRootfs(work.path);
    const paths = entries.map((e) => e.path);
    assert.equal(new Set(paths).size, names.length + 3, `distinct paths: ${paths.map(printablePath).join(' ')}`);
    for (const name of names) assert.ok(paths.includes(rootfsPath(Buffer.concat([Buffer.from('/'), name]))), name.toString('hex'));
    assert.ok(paths.includes('/é') && paths.includes('/💀') && paths.includes('/\\xff'), 'valid UTF-8 names stay as they are');
    assert.ok(paths.includes(`/dir-é/a${String.fromCharCode(0xdcfe)}`), 'each name of a path on its own');
    assert.equal(entries.find((e) => e.path === '/link')?.linkTarget, `t${String.fromCharCode(0xdcfd)}`);
    const target = (linkTarget: string) => entries.map((e) => (e.path === '/link' ? { ...e, linkTarget } : e));
    assert.deepEqual(diffRootfs(entries, target('t')), ['/link: link target t\\xfd != t']);
    assert.equal(printablePath(`/a\\b${String.fromCharCode(0xdcff)}`), '/a\\\\b\\xff');
  } finally {
    await work.remove();
  }
});
