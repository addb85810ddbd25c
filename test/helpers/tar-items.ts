import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isBuildfleetError } from '../../imagebuilder/errors.js';
import type { TarHeader } from '../../imagebuilder/tar/entry.js';
import { readTar, type ReadTarOptions } from '../../imagebuilder/tar/reader.js';
import { TarWriter } from '../../imagebuilder/tar/writer.js';

/** Helpers and fixtures for the tar codec's tests (imagebuilder/tar/tar.test.ts, tar-gnu.test.ts). */

export type Item = { header: TarHeader; body: Buffer };

export function h(path: string, type: TarHeader['type'], extra: Partial<TarHeader> = {}): TarHeader {
  const mode = type === 'directory' ? 0o755 : 0o644;
  return { path, type, mode, uid: 0, gid: 0, size: 0, mtime: { sec: 1700000000, nsec: 0 }, xattrs: new Map(), ...extra };
}

export function file(path: string, content: string | Buffer, extra: Partial<TarHeader> = {}): Item {
  const body = Buffer.from(content);
  return { header: h(path, 'file', { size: body.length, ...extra }), body };
}

export const item = (header: TarHeader): Item => ({ header, body: Buffer.alloc(0) });

export async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

export async function writeTar(items: Item[]): Promise<Buffer> {
  const writer = new TarWriter();
  const out = collect(writer.stream);
  for (const { header, body } of items) await writer.add(header, header.type === 'file' ? body : undefined);
  await writer.finish();
  return out;
}

/** Feeds bytes in odd-sized chunks, so headers and records straddle chunk boundaries. */
export function chunked(data: Buffer, size = 777): Readable {
  function* chunks() {
    for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
  }
  return Readable.from(chunks(), { objectMode: false });
}

export async function readAll(input: Buffer | Readable, options?: ReadTarOptions): Promise<Item[]> {
  const out: Item[] = [];
  const stream = Buffer.isBuffer(input) ? chunked(input) : input;
  for await (const entry of readTar(stream, options)) out.push({ header: entry.header, body: await collect(entry.body) });
  return out;
}

/** As readAll, but through entry.buffer(), the way a squash reads small files. */
export async function readAllBuffered(input: Buffer, options?: ReadTarOptions): Promise<Item[]> {
  const out: Item[] = [];
  for await (const entry of readTar(chunked(input), options)) out.push({ header: entry.header, body: await entry.buffer() });
  return out;
}

export async function rejectsFormat(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isBuildfleetError(err) && err.kind === 'format', `expected a format error, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

export const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

export function run(cmd: string, args: string[]): string {
  const result = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C.UTF-8', TZ: 'UTC' } });
  assert.equal(result.status, 0, `${cmd} ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

export const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** An xattr's value as hex, as the kernel keeps it (getfattr, package attr). */
export function getxattrHex(path: string, name: string): string {
  const match = /=0x([0-9a-f]*)$/m.exec(run('getfattr', ['-n', name, '-e', 'hex', path]));
  assert.ok(match, `getfattr ${name} ${path}`);
  return match[1]!;
}

export async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'buildfleet-tar-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** security.capability for cap_net_raw+ep (VFS v2): NUL bytes and non-UTF-8 bytes inside. */
export const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const LONG_DIR = Array.from({ length: 5 }, (_, i) => `level-${i}-${'x'.repeat(45)}`).join('/');
/** Over 300 bytes, with a component over 100: needs a PAX path (or a GNU 'L' header). */
export const LONG_NAME = `${LONG_DIR}/${'n'.repeat(120)}-file`;
/** 182 bytes that fit ustar prefix + name. */
export const SPLIT_NAME = `${'p'.repeat(60)}/${'q'.repeat(60)}/${'r'.repeat(60)}`;
export const UNICODE = 'd/ünïcødé-文件.txt';
export const LONG_TARGET = `../target/${'y'.repeat(150)}`;

export function hardCases(): Item[] {
  return [
    item(h('', 'directory')),
    item(h('d', 'directory', { mode: 0o1777, mtime: { sec: 1700000000, nsec: 123456789 }, xattrs: new Map([['user.dir', Buffer.from('on a dir')]]) })),
    file('d/setid', 'hello', { mode: 0o6755, uname: 'root', gname: 'wheel' }),
    file('d/empty', ''),
    file(LONG_NAME, 'long'),
    file(SPLIT_NAME, 'split'),
    file(UNICODE, 'ü', { uname: 'üser', gname: 'a-group-name-longer-than-thirty-two-bytes' }),
    file('d/.wh.gone', ''),
    item(h('d/.wh..wh..opq', 'file')),
    file('d/bigids', 'ids', { uid: 300000, gid: 4294967294 }),
    file('d/cap', '#!', {
      mode: 0o755,
      xattrs: new Map([['security.capability', CAP], ['user.empty', Buffer.alloc(0)], ['user.bin', Buffer.from([0xff, 0xfe, 0, 0x0a, 0x3d, 0x20])]]),
    }),
    file('d/times', 't', { mtime: { sec: 1700000000, nsec: 1 }, atime: { sec: 1700000001, nsec: 999999999 }, ctime: { sec: 1700000002, nsec: 5e8 } }),
    file('d/negative', 'n', { mtime: { sec: -3, nsec: 5e8 } }),
    item(h('dev', 'directory')),
    item(h('dev/null', 'char', { mode: 0o666, devmajor: 1, devminor: 3 })),
    item(h('dev/sda', 'block', { mode: 0o660, devmajor: 8, devminor: 0 })),
    item(h('d/fifo', 'fifo', { mode: 0o600 })),
    item(h('d/hardlink', 'hardlink', { linkname: 'd/setid' })),
    item(h('d/symlink', 'symlink', { mode: 0o777, linkname: LONG_TARGET })),
    item(h('d/abs-symlink', 'symlink', { mode: 0o777, linkname: '/etc/passwd' })),
    file('d/extra', 'e', { paxExtra: new Map([['comment', Buffer.from([0, 1, 2, 255])], ['SCHILY.fflags', Buffer.from('nodump')]]) }),
  ];
}
