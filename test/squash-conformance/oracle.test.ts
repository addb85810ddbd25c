import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import pLimit from 'p-limit';
import type { DockerEngine } from '../../daemons/index.js';
import { startEngine, dockerBuild } from '../helpers/real.js';
import { DOCKER_INIT_FILES, diffRootfs, exportRootfs, imageRuntimeConfig, rootfsPath, type RootfsEntry } from '../helpers/rootfs-oracle.js';
import { BASE, CAP_NET_RAW_EP, buildConformanceCase, conformanceCases, longNames } from './cases.js';

/**
 * Checks the conformance ORACLE (not the squash engine): every case image, as Docker shows it
 * through exportRootfs, holds what its Dockerfile promises, an image compared with itself has no
 * differences and a deliberately changed image shows exactly that change.
 * Real Docker Engine 20.10 (one for the file), root, Debian package attr.
 */
let engine: DockerEngine;
const built = new Map<string, Promise<void>>();
const tagOf = (name: string): string => `oracle/${name}:latest`;

before(async () => {
  engine = await startEngine();
  const limit = pLimit(4);
  for (const testCase of conformanceCases) {
    const build = limit(() => buildConformanceCase(engine, tagOf(testCase.name), testCase));
    build.catch(() => undefined); // awaited (and reported) by the case's own test
    built.set(testCase.name, build);
  }
}, { timeout: 120_000 });

after(async () => {
  await Promise.allSettled(built.values());
  await engine?.stop();
});

const sha = (content: string | Buffer): string => createHash('sha256').update(content).digest('hex');
const seconds = (s: number): bigint => BigInt(s) * 1_000_000_000n;
const at = (iso: string): bigint => seconds(Date.parse(`${iso}Z`) / 1000);

function get(entries: RootfsEntry[], path: string): RootfsEntry {
  const entry = entries.find((e) => e.path === path);
  assert.ok(entry, `${path} is missing`);
  return entry;
}

function file(entries: RootfsEntry[], path: string, content: string | Buffer): RootfsEntry {
  const entry = get(entries, path);
  assert.equal(entry.type, 'file', path);
  assert.equal(entry.sha256, sha(content), `${path} content`);
  assert.equal(entry.size, Buffer.byteLength(content), `${path} size`);
  return entry;
}

function absent(entries: RootfsEntry[], ...paths: string[]): void {
  for (const path of paths) assert.ok(!entries.some((e) => e.path === path || e.path.startsWith(`${path}/`)), `${path} should be gone`);
}

function linked(entries: RootfsEntry[], group: string | undefined, ...paths: string[]): void {
  for (const path of paths) assert.equal(get(entries, path).hardlinkGroup, group, `hardlink group of ${path}`);
}

function attrs(entries: RootfsEntry[], path: string, expected: Partial<RootfsEntry>): void {
  const entry = get(entries, path);
  assert.deepEqual(Object.fromEntries(Object.keys(expected).map((key) => [key, entry[key as keyof RootfsEntry]])), expected, path);
}

/** What each case's Dockerfile promises. */
const checks: Record<string, (entries: RootfsEntry[]) => void | Promise<void>> = {
  'hardlink-target-deleted': (e) => {
    absent(e, '/hl/target');
    file(e, '/hl/link1', 'original\n');
    file(e, '/hl/link2', 'original\n');
    linked(e, '/hl/link1', '/hl/link1', '/hl/link2');
  },
  'hardlink-target-overwritten': (e) => {
    file(e, '/hl/link', 'original\n');
    file(e, '/hl/target', 'replaced\n');
    file(e, '/hl/link2', 'original2\n');
    file(e, '/hl/renamed-over', 'new\n');
    linked(e, undefined, '/hl/link', '/hl/target', '/hl/link2', '/hl/renamed-over');
  },
  'hardlink-chmod-splits-group': (e) => {
    for (const name of ['a', 'b', 'c', 'd']) file(e, `/hl/${name}`, 'shared\n');
    linked(e, '/hl/a', '/hl/a', '/hl/d');
    linked(e, undefined, '/hl/b', '/hl/c');
    attrs(e, '/hl/b', { mode: 0o600, uid: 0 });
    attrs(e, '/hl/c', { mode: 0o644, uid: 1234, gid: 5678 });
  },
  'hardlink-added-later': (e) => {
    for (const path of ['/hl/base', '/hl/dir/second', '/hl/third']) file(e, path, 'base\n');
    linked(e, '/hl/base', '/hl/base', '/hl/dir/second', '/hl/third');
  },
  'opaque-dir-recreated': (e) => {
    absent(e, '/op/dir/old', '/op/dir/sub');
    attrs(e, '/op/dir', { type: 'dir', mode: 0o755 });
    file(e, '/op/dir/new', 'new\n');
    file(e, '/op/dir/more', 'more\n');
  },
  'delete-recreate-three-layers': (e) => {
    file(e, '/dr/file', 'third\n');
    absent(e, '/dr/dir/inner');
    file(e, '/dr/dir/other', 'third\n');
  },
  'dir-replaced-by-file-and-symlink': (e) => {
    file(e, '/rp/tofile', 'now-a-file\n');
    absent(e, '/rp/tofile/sub', '/rp/tolink/y', '/rp/tolink/sub');
    attrs(e, '/rp/tolink', { type: 'symlink', linkTarget: 'target' });
    attrs(e, '/rp/fromfile', { type: 'dir' });
    file(e, '/rp/fromfile/inside', 'inside\n');
    file(e, '/rp/target/t', 't\n');
  },
  'symlink-dangling': (e) => {
    absent(e, '/sl/target', '/sl/dir');
    attrs(e, '/sl/rel', { type: 'symlink', linkTarget: 'target' });
    attrs(e, '/sl/abs', { type: 'symlink', linkTarget: '/sl/target' });
    attrs(e, '/sl/dirlink', { type: 'symlink', linkTarget: 'dir' });
    attrs(e, '/sl/never', { type: 'symlink', linkTarget: '/nowhere/at/all' });
  },
  'whiteout-like-names': (e) => {
    file(e, '/wh/a.wh.b', '2\n');
    file(e, '/wh/b', 'b\n');
    for (const name of ['x.wh..wh..opq', 'trailing.wh.', '.whiteout']) file(e, `/wh/${name}`, '1\n');
    absent(e, '/wh/plain', '/wh/..wh.dots', '/wh/dir.wh.d', '/wh/.wh');
  },
  'long-and-unicode-names': (e) => {
    file(e, longNames.over100, '100\n');
    file(e, longNames.over255, '255\n');
    assert.ok(Buffer.byteLength(longNames.over255) > 255);
    attrs(e, longNames.maxComponent, { mode: 0o600 });
    file(e, longNames.unicodeMaxComponent, 'uni2\n');
    assert.equal(Buffer.byteLength(longNames.unicodeMaxComponent.split('/').pop()!), 255);
    absent(e, longNames.deletedLong, longNames.renamedFrom);
    file(e, longNames.renamedTo, 'move\n');
    attrs(e, longNames.linkToOver255, { type: 'symlink', linkTarget: longNames.over255 });
    linked(e, longNames.over255, longNames.over255, longNames.hardlinkToOver255);
    for (const name of longNames.unicode) file(e, name, name.includes('\n') ? 'nl\n' : 'u\n');
  },
  'non-utf8-names': (e) => {
    const p = (...parts: Array<string | number>) => rootfsPath(Buffer.concat(parts.map((x) => (typeof x === 'string' ? Buffer.from(x) : Buffer.of(x)))));
    file(e, p('/nu/bad', 0xff, 'name'), 'x\n');
    file(e, p('/nu/hard', 0xfd), 'x\n');
    linked(e, p('/nu/bad', 0xff, 'name'), p('/nu/bad', 0xff, 'name'), p('/nu/hard', 0xfd));
    attrs(e, p('/nu/link', 0xfe), { type: 'symlink', linkTarget: p('bad', 0xff, 'name') });
    attrs(e, '/nu/dangling', { type: 'symlink', linkTarget: p('/nowhere/', 0xc0, 0xaf) });
    absent(e, p('/nu/gone', 0xfa), p('/nu/op', 0xfc, '/in', 0xfb));
    file(e, p('/nu/op', 0xfc, '/again'), 'again\n');
    linked(e, p('/nu/later', 0xf9), p('/nu/other', 0xfe, 'x'), p('/nu/later', 0xf9));
    file(e, p('/nu/new', 0xf8, 'é'), 'w\n');
  },
  'big-uid-gid': (e) => {
    attrs(e, '/ids/big', { uid: 500000, gid: 600000 });
    attrs(e, '/ids/max', { uid: 4294967294, gid: 4294967294 });
    attrs(e, '/ids/dir', { type: 'dir', uid: 2097152, gid: 2097152 });
    attrs(e, '/ids/link', { type: 'symlink', uid: 262144, gid: 262144 });
  },
  'chmod-chown-only-later': (e) => {
    assert.equal(file(e, '/perm/file', 'f\n').mode, 0o640);
    attrs(e, '/perm/dir', { mode: 0o700, uid: 0 });
    attrs(e, '/perm/dir/sub', { mode: 0o755, uid: 33, gid: 44 });
    assert.equal(file(e, '/perm/dir/sub/g', 'g\n').uid, 1000);
    attrs(e, '/perm/link', { type: 'symlink', uid: 1000, gid: 2000 });
  },
  'special-mode-bits': (e) => {
    attrs(e, '/sp/setuid', { mode: 0o4755 });
    attrs(e, '/sp/setgid', { mode: 0o6711 });
    attrs(e, '/sp/sticky', { type: 'dir', mode: 0o1777 });
    attrs(e, '/sp/sgid-dir', { type: 'dir', mode: 0o2775 });
    attrs(e, '/sp/all', { mode: 0o7777 });
  },
  'fifo-and-devices': (e) => {
    attrs(e, '/devs/fifo', { type: 'fifo', uid: 5, gid: 6 });
    attrs(e, '/devs/null', { type: 'char', devMajor: 1, devMinor: 3, mode: 0o600 });
    attrs(e, '/devs/loop', { type: 'block', devMajor: 7, devMinor: 200 });
    attrs(e, '/devs/wide', { type: 'char', devMajor: 4095, devMinor: 1048575 });
    attrs(e, '/devs/recreated', { type: 'block', devMajor: 7, devMinor: 201 });
  },
  'config-only': async (e) => {
    assert.deepEqual(diffRootfs(await exportRootfs(engine, BASE), e), []);
    const layers = async (image: string): Promise<string> => (await engine.cli(['image', 'inspect', '--format', '{{json .RootFS.Layers}}', image])).stdout;
    assert.equal(await layers(tagOf('config-only')), await layers(BASE), 'no layer of its own');
    const config = await imageRuntimeConfig(engine, tagOf('config-only'));
    assert.ok((config.Env as string[]).includes('CONFIG_ONLY=1'));
    assert.deepEqual(config.Cmd, ['sh']);
  },
  'security-capability': (e) => {
    for (const path of ['/caps/netraw', '/caps/netraw-link', '/caps/second']) assert.deepEqual(get(e, path).xattrs, { 'security.capability': CAP_NET_RAW_EP }, path);
    linked(e, '/caps/netraw', '/caps/netraw', '/caps/netraw-link');
    attrs(e, '/caps/second', { mode: 0o750 });
    // chown removed the capability (the kernel does, on copy-up's chown).
    attrs(e, '/caps/dropped', { uid: 1, gid: 1, xattrs: {} });
    // Docker keeps neither user.* xattrs nor sub-second mtimes (see the note in cases.ts).
    attrs(e, '/caps/user-xattr', { xattrs: {} });
    attrs(e, '/caps/subsecond', { mtimeNs: at('2021-05-06T07:08:09') });
  },
  'explicit-mtimes': (e) => {
    attrs(e, '/mt/dir', { mtimeNs: at('2003-01-01T00:00:00') });
    attrs(e, '/mt/dir/sub', { mtimeNs: at('2005-06-07T08:09:10') });
    attrs(e, '/mt/dir/sub/a', { mtimeNs: at('1999-12-31T23:59:59') });
    attrs(e, '/mt/dir/sub/b', { mtimeNs: at('2005-06-07T08:09:10') });
    attrs(e, '/mt/dir/sub/link', { type: 'symlink', mtimeNs: at('2004-01-01T00:00:00') });
    attrs(e, '/mt/epoch', { mtimeNs: 0n });
    // The layer says -86400; Docker's extraction clamps times before the epoch to 0 (pkg/system.Chtimes).
    attrs(e, '/mt/negative', { mtimeNs: 0n });
  },
  'sparse-file': (e) => {
    const hole = Buffer.alloc(4 * 1024 * 1024);
    hole.write('more', 100);
    file(e, '/sparse/hole', hole);
    file(e, '/sparse/all-hole', Buffer.alloc(6 * 1024 * 1024));
    const mixed = Buffer.alloc(3_000_004);
    mixed.write('head', 0);
    mixed.write('tail', 3_000_000);
    file(e, '/sparse/mixed', mixed);
  },
  'empty-directory': (e) => {
    for (const path of ['/empty/plain', '/empty/nested', '/empty/mode', '/empty/later']) {
      attrs(e, path, { type: 'dir' });
      assert.ok(!e.some((entry) => entry.path.startsWith(`${path}/`)), `${path} is empty`);
    }
    attrs(e, '/empty/mode', { mode: 0o711 });
    attrs(e, '/empty/plain', { uid: 7, gid: 8 });
    absent(e, '/empty/nested/leaf');
  },
  'config-heavy': async (e) => {
    assert.equal(file(e, '/srv/app/main.sh', 'app\n').mode, 0o755);
    assert.deepEqual(await imageRuntimeConfig(engine, tagOf('config-heavy')), {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'APP_HOME=/srv/app', 'LANG=C.UTF-8', 'WITH_SPACE=a b', 'EQUALS=k=v'],
      Cmd: ['echo hello'],
      Entrypoint: ['/bin/sh', '-c'],
      User: '1000:1000',
      WorkingDir: '/srv/app',
      Labels: { 'org.example.team': 'build', 'org.example.unicode': 'héllo', 'org.example.empty': '' },
      ExposedPorts: { '8080/tcp': {}, '9090/udp': {} },
      Healthcheck: { Test: ['CMD', '/bin/true'], Interval: 30e9, Timeout: 3e9, StartPeriod: 5e9, Retries: 2 },
      Volumes: { '/data': {}, '/srv/app/cache': {} },
      StopSignal: 'SIGTERM',
    });
  },
};

test('every conformance case has oracle checks and a unique name', () => {
  const names = conformanceCases.map((c) => c.name);
  assert.equal(new Set(names).size, names.length);
  assert.deepEqual([...names].sort(), Object.keys(checks).sort());
});

for (const testCase of conformanceCases) {
  test(`oracle shows what the Dockerfile promises: ${testCase.name}`, { timeout: 120_000 }, async () => {
    await built.get(testCase.name);
    const entries = await exportRootfs(engine, tagOf(testCase.name));
    await checks[testCase.name]!(entries);
    // A second container of the same image: nothing Docker adds per container leaks through.
    assert.deepEqual(diffRootfs(entries, await exportRootfs(engine, tagOf(testCase.name))), []);
  });
}

test('exportRootfs leaves out what Docker adds to every container', { timeout: 60_000 }, async () => {
  const entries = await exportRootfs(engine, BASE);
  for (const path of DOCKER_INIT_FILES) absent(entries, path);
  for (const path of ['/dev', '/dev/pts', '/dev/shm', '/etc', '/proc', '/sys']) attrs(entries, path, { type: 'dir', mtimeNs: null });
  attrs(entries, '/etc/passwd', { mtimeNs: 0n, mode: 0o644 });
  attrs(entries, '/tmp', { mode: 0o1777, mtimeNs: 0n });
});

test('diffRootfs reports exactly a deliberate change', { timeout: 120_000 }, async () => {
  await Promise.all([built.get('chmod-chown-only-later'), built.get('hardlink-chmod-splits-group')]);
  const base = await exportRootfs(engine, tagOf('chmod-chown-only-later'));
  const derive = async (from: string, run: string): Promise<RootfsEntry[]> => {
    await dockerBuild(engine, 'oracle/derived:latest', `FROM ${tagOf(from)}\nRUN ${run}\n`);
    return exportRootfs(engine, 'oracle/derived:latest');
  };
  assert.deepEqual(diffRootfs(base, await derive('chmod-chown-only-later', 'chmod 0604 /perm/file')), ['/perm/file: mode 0640 != 0604']);

  const changed = await derive('chmod-chown-only-later', "echo changed > /perm/dir/sub/g && touch -d '2010-01-01 00:00:00' /perm/dir/sub/g");
  const oldTime = get(base, '/perm/dir/sub/g').mtimeNs!;
  assert.deepEqual(diffRootfs(base, changed), [
    '/perm/dir/sub/g: size 2 != 8',
    `/perm/dir/sub/g: sha256 ${sha('g\n')} != ${sha('changed\n')}`,
    `/perm/dir/sub/g: mtime ${oldTime / 1_000_000_000n}.000000000 != 1262304000.000000000`,
  ]);
  assert.deepEqual(diffRootfs(changed, base).length, 3, 'and the other way round');

  // chmod to the same mode still copies /hl/d up: the group {a, d} falls apart.
  const groups = await exportRootfs(engine, tagOf('hardlink-chmod-splits-group'));
  assert.deepEqual(diffRootfs(groups, await derive('hardlink-chmod-splits-group', 'chmod 0644 /hl/d')), [
    '/hl/a: hardlink group /hl/a != (none)',
    '/hl/d: hardlink group /hl/a != (none)',
  ]);
  await engine.cli(['image', 'rm', 'oracle/derived:latest']);
});

test('exportRootfs removes its containers and their volumes', { timeout: 60_000 }, async () => {
  await Promise.allSettled(built.values());
  await exportRootfs(engine, tagOf('config-heavy')); // declares two volumes
  assert.equal((await engine.cli(['ps', '--all', '--quiet'])).stdout.trim(), '');
  assert.equal((await engine.cli(['volume', 'ls', '--quiet'])).stdout.trim(), '');
});

test('diffRootfs names every differing field, and missing and unexpected paths', () => {
  const base: RootfsEntry = { path: '/x', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 1, sha256: 'a'.repeat(64), mtimeNs: seconds(5), xattrs: {} };
  const other: RootfsEntry = { ...base, mode: 0o4755, uid: 1, gid: 2, size: 2, sha256: 'b'.repeat(64), mtimeNs: seconds(5) + 7n, xattrs: { 'security.capability': '0x01' }, hardlinkGroup: '/x' };
  assert.deepEqual(diffRootfs([base, { ...base, path: '/gone', type: 'dir' }], [other, { ...base, path: '/new', type: 'fifo' }]), [
    '/gone: missing (expected dir)',
    '/new: unexpected fifo',
    '/x: mode 0644 != 4755',
    '/x: uid 0 != 1',
    '/x: gid 0 != 2',
    '/x: size 1 != 2',
    `/x: sha256 ${'a'.repeat(64)} != ${'b'.repeat(64)}`,
    '/x: mtime 5.000000000 != 5.000000007',
    '/x: xattr security.capability (none) != 0x01',
    '/x: hardlink group (none) != /x',
  ]);
  const dev: RootfsEntry = { path: '/d', type: 'char', mode: 0o600, uid: 0, gid: 0, devMajor: 1, devMinor: 3, mtimeNs: null, xattrs: {} };
  assert.deepEqual(diffRootfs([dev], [{ ...dev, type: 'block', devMinor: 5, mtimeNs: 9n }]), ['/d: type char != block', '/d: device 1:3 != 1:5']);
  const link: RootfsEntry = { path: '/l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, linkTarget: 'a', mtimeNs: 0n, xattrs: {} };
  assert.deepEqual(diffRootfs([link], [{ ...link, linkTarget: 'b' }]), ['/l: link target a != b']);
  assert.deepEqual(diffRootfs([base], [base]), []);
});
