import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync } from 'node:zlib';
import { isBuildfleetError } from '../../imagebuilder/errors.js';
import { decodeName, encodePaxRecord } from '../../imagebuilder/tar/fields.js';
import { END_OF_ARCHIVE, padded, rawHeader } from '../../test/helpers/raw-tar.js';
import { file, h, item, writeTar } from '../../test/helpers/tar-items.js';
import { crc64 } from './crc64.js';
import { splitTar, type SplitTarEntry } from './split-tar.js';
import { TarSplitRecorder, fileLine, goClean, goJsonString } from './tar-split.js';

type Entry = { type: number; name?: string; name_raw?: string; size?: number; payload: string | null; position: number };

async function record(tar: Buffer, chunk = 4096): Promise<{ lines: string[]; entries: Entry[]; seen: SplitTarEntry[]; data: Map<string, Buffer> }> {
  const recorder = new TarSplitRecorder();
  const seen: SplitTarEntry[] = [];
  const data = new Map<string, Buffer>();
  let current = '';
  async function* chunks() {
    for (let at = 0; at < tar.length; at += chunk) yield tar.subarray(at, at + chunk);
  }
  await splitTar(chunks(), recorder, {
    entry: (entry) => {
      seen.push(entry);
      current = entry.name;
      data.set(current, Buffer.alloc(0));
    },
    data: (piece) => void data.set(current, Buffer.concat([data.get(current)!, piece])),
  });
  const lines = gunzipSync(await recorder.finish()).toString('utf8').split('\n');
  assert.equal(lines.pop(), '', 'the document ends with a newline');
  return { lines, entries: lines.map((line) => JSON.parse(line) as Entry), seen, data };
}

/** What tar-split's assembler does: segments as they are, each file's payload from `files`, CRC checked. */
function assemble(entries: Entry[], files: Map<string, Buffer>): Buffer {
  const out: Buffer[] = [];
  entries.forEach((entry, i) => {
    assert.equal(entry.position, i, 'positions count from 0');
    if (entry.type === 2) out.push(Buffer.from(entry.payload!, 'base64'));
    else if ((entry.size ?? 0) > 0) {
      const name = entry.name ?? decodeName(Buffer.from(entry.name_raw!, 'base64'));
      const content = files.get(name) ?? Buffer.alloc(0);
      assert.equal(crc64(content).toString('base64'), entry.payload, `crc of ${name}`);
      out.push(content);
    }
  });
  return Buffer.concat(out);
}

test('Go encoding/json escaping: HTML characters, controls, U+2028/9; everything else as it is', () => {
  assert.equal(goJsonString('a<b>&c"d\\e\n\r\t\u0001\u007f\b\f\u2028\u2029é日本😀'), '"a\\u003cb\\u003e\\u0026c\\"d\\\\e\\n\\r\\t\\u0001\u007f\\u0008\\u000c\\u2028\\u2029é日本😀"');
});

test('file lines: field order and omitempty as Go writes storage.Entry', () => {
  const crc = Buffer.from('0011223344556677', 'hex');
  assert.equal(fileLine('etc/', 0, undefined, 1), '{"type":1,"name":"etc/","payload":null,"position":1}\n');
  assert.equal(fileLine('etc/x', 12, crc, 2), `{"type":1,"name":"etc/x","size":12,"payload":"${crc.toString('base64')}","position":2}\n`);
  assert.equal(fileLine('', 0, undefined, 0), '{"type":1,"payload":null,"position":0}\n');
  // Not UTF-8 (a lone surrogate for byte 0xff): the bytes go to name_raw; a real pair stays a name.
  assert.equal(fileLine('bad\udcffname', 0, undefined, 3), `{"type":1,"name_raw":"${Buffer.from('bad\xffname', 'latin1').toString('base64')}","payload":null,"position":3}\n`);
  assert.equal(fileLine('😀', 0, undefined, 4), '{"type":1,"name":"😀","payload":null,"position":4}\n');
});

test('the recorder: segments between files joined, the tail a segment per chunk then an empty one', async () => {
  const recorder = new TarSplitRecorder();
  recorder.segment(Buffer.from('ab'));
  recorder.segment(Buffer.from('cd'));
  recorder.file('f', 3, crc64(Buffer.from('xyz')));
  recorder.file('g', 0, undefined);
  recorder.segment(Buffer.from('pad+end'));
  recorder.end();
  recorder.segment(Buffer.alloc(1024 * 1024 + 5, 1));
  recorder.segment(Buffer.from('more'));
  const lines = gunzipSync(await recorder.finish()).toString().trim().split('\n');
  const entries = lines.map((line) => JSON.parse(line) as Entry);
  assert.deepEqual(entries.map((e) => [e.type, e.name ?? Buffer.from(e.payload ?? '', 'base64').length]), [[2, 4], [1, 'f'], [1, 'g'], [2, 7], [2, 1024 * 1024], [2, 5], [2, 4], [2, 0]]);
  assert.equal(lines.at(-1), '{"type":2,"payload":"","position":7}');
  await assert.rejects(recorder.finish(), /already finished/);
});

test('drained() lets a walker wait for gzip, and never waits for a drain that came before the call', { timeout: 20_000 }, async () => {
  const recorder = new TarSplitRecorder();
  const header = Buffer.alloc(512, 0x61);
  for (let i = 0; i < 20_000; i++) {
    recorder.segment(header);
    recorder.file(`f${i}`, 0, undefined);
    if (i % 1000 === 0) await recorder.drained();
  }
  await new Promise((resolve) => setTimeout(resolve, 200)); // gzip catches up and says 'drain' to nobody
  await recorder.drained();
  const lines = gunzipSync(await recorder.finish()).toString().trim().split('\n');
  assert.equal(lines.length, 40_001, 'a segment and a file per round, and the empty tail');
});

test('the recorder refuses what tar-split refuses: the same path twice, a payload without its CRC', () => {
  const recorder = new TarSplitRecorder();
  recorder.file('./a/b/', 0, undefined);
  assert.throws(() => recorder.file('a//b', 0, undefined), /duplicates of file paths/);
  assert.throws(() => recorder.file('c', 5, undefined), /needs its 8-byte CRC-64/);
  assert.equal(goClean('./a/../b/'), 'b');
  assert.equal(goClean(''), '.');
  assert.equal(goClean('/'), '/');
});

test('splitTar over a Go-style layer: segments and files put the tar back together byte for byte, at any chunking', async () => {
  const big = Buffer.alloc(200_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) % 253;
  const tar = await writeTar([
    item(h('dir/', 'directory')),
    file('dir/big', big),
    file('dir/block', Buffer.alloc(512, 7)),
    file('dir/empty', ''),
    item(h('dir/hard', 'hardlink', { linkname: 'dir/big' })),
    item(h('dir/sym', 'symlink', { linkname: 'big' })),
    file(`dir/${'n'.repeat(150)}`, 'long name\n'),
    file('dir/bad\udcffname', 'x'),
    file('dir/.wh.gone', ''),
  ]);
  const first = await record(tar, 65_536);
  for (const chunk of [1, 511, 512, 513, 100_000, tar.length]) {
    assert.deepEqual((await record(tar, chunk)).lines, first.lines, `chunks of ${chunk}`);
  }
  assert.deepEqual(assemble(first.entries, first.data), tar);
  const kinds = first.entries.map((e) => (e.type === 2 ? 'S' : 'F')).join('');
  assert.equal(kinds, 'SF'.repeat(9) + 'SS', 'one segment before each file, the end blocks, the empty tail');
  assert.equal(first.entries.filter((e) => e.type === 1 && e.size === undefined).length, 5, 'entries without data have no size and a null payload');
  assert.equal(first.seen.find((e) => e.name === 'dir/hard')?.typeflag, '1');
  assert.equal(first.entries.find((e) => e.name_raw)?.name_raw, Buffer.from('dir/bad\xffname', 'latin1').toString('base64'));
  assert.equal(first.seen.length, 9);
});

test('splitTar: GNU L/K, PAX x and g, ustar prefix, legacy directory, base-256 size, a link with a size, trailing bytes', async () => {
  const longName = `gnu/${'L'.repeat(120)}`;
  const longLink = `target/${'K'.repeat(120)}`;
  const global = encodePaxRecord('comment', Buffer.from('global'));
  const ext = Buffer.concat([encodePaxRecord('path', Buffer.from('pax/path')), encodePaxRecord('size', Buffer.from('4'))]);
  const tar = Buffer.concat([
    rawHeader('././@LongLink', 'L', longName.length + 1, { format: 'gnu' }),
    padded(`${longName}\0`),
    rawHeader('././@LongLink', 'K', longLink.length + 1, { format: 'gnu' }),
    padded(`${longLink}\0`),
    rawHeader('short', '2', 0, { format: 'gnu', linkname: 'short-target' }),
    rawHeader('pax_global_header', 'g', global.length),
    padded(global),
    rawHeader('PaxHeaders/x', 'x', ext.length),
    padded(ext),
    rawHeader('ignored-name', '0', 999),
    padded('four'),
    rawHeader('name', '0', 3, { prefix: 'with/prefix' }),
    padded('abc'),
    rawHeader('legacy-dir/', '\0', 0),
    rawHeader('b256', '0', 5, { base256Size: true }),
    padded('12345'),
    rawHeader('hard-with-size', '1', 7, { linkname: 'b256' }),
    END_OF_ARCHIVE,
    Buffer.alloc(3 * 512),
    Buffer.from('tail'),
  ]);
  const { entries, seen, data } = await record(tar, 700);
  const files = entries.filter((e) => e.type === 1);
  assert.deepEqual(
    files.map((e) => [e.name, e.size ?? 0]),
    [[longName, 0], ['pax_global_header', 0], ['pax/path', 4], ['with/prefix/name', 3], ['legacy-dir/', 0], ['b256', 5], ['hard-with-size', 7]],
  );
  assert.deepEqual(seen.map((e) => [e.name, e.typeflag, e.linkname, e.dataSize]), [
    [longName, '2', longLink, 0],
    ['pax/path', '0', '', 4],
    ['with/prefix/name', '0', '', 3],
    ['legacy-dir/', '5', '', 0],
    ['b256', '0', '', 5],
    ['hard-with-size', '1', 'b256', 0],
  ], 'the visitor sees no PAX global header');
  // Go hashes the nothing a header-only entry has: the CRC of no bytes.
  assert.equal(files.at(-1)!.payload, Buffer.alloc(8).toString('base64'));
  assert.deepEqual(seen[1]!.pax.map(([key]) => key), ['path', 'size']);
  // The extension headers and their padding sit in the segment before their entry.
  assert.equal(Buffer.from(entries[0]!.payload!, 'base64').length, 512 * 5);
  data.set('hard-with-size', Buffer.alloc(0));
  assert.deepEqual(assemble(entries, data), tar);
});

async function splitError(tar: Buffer): Promise<unknown> {
  try {
    await record(tar);
  } catch (err) {
    return err;
  }
  assert.fail('splitTar accepted it');
}

test('splitTar refuses corrupt, truncated and sparse tars with a clear error', async () => {
  const good = Buffer.concat([rawHeader('f', '0', 5), padded('hello'), END_OF_ARCHIVE]);
  const cases: Array<[string, Buffer, RegExp, string]> = [
    ['truncated data', good.subarray(0, 515), /truncated tar .*file's data/, 'format'],
    ['truncated header', good.subarray(0, 1100), /truncated tar .*header/, 'format'],
    ['truncated padding', good.subarray(0, 600), /truncated tar .*padding/, 'format'],
    ['bad checksum', Buffer.concat([Buffer.from(good.subarray(0, 512)).fill(0x41, 0, 1), good.subarray(512)]), /bad header checksum/, 'format'],
    ['zero block then a header', Buffer.concat([Buffer.alloc(512), good]), /zero block followed by a header/, 'format'],
    ['GNU sparse', Buffer.concat([rawHeader('s', 'S', 0, { format: 'gnu' }), END_OF_ARCHIVE]), /sparse file "s"/, 'unsupported'],
  ];
  for (const [what, tar, message, kind] of cases) {
    const err = await splitError(tar);
    assert.ok(isBuildfleetError(err) && err.kind === kind, `${what}: ${String(err)}`);
    assert.match(err.message, message, what);
  }
  // Input that simply stops at a block boundary (no end blocks) is what Go's reader takes as the end.
  const { entries } = await record(good.subarray(0, 1024));
  assert.deepEqual(entries.map((e) => e.type), [2, 1, 2, 2], 'header, file, its padding, the empty tail');
});
