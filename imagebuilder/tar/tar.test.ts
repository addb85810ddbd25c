import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import tarStream from 'tar-stream';
import type { TarHeader } from './entry.js';
import { isBuildfleetError } from '../errors.js';
import { checksumMatches, encodePaxRecord, formatNumeric, parseNumeric, setChecksum } from './fields.js';
import { readTar } from './reader.js';
import { CAP, chunked, collect, file, h, hardCases, item, readAll, readAllBuffered, rejectsFormat, sha256, SPLIT_NAME, writeTar } from '../../test/helpers/tar-items.js';
import { encodeHeader, TarWriter } from './writer.js';

/** The codec on its own: round trips, streaming, end-of-archive forms, errors, other writers. GNU tar interop: tar-gnu.test.ts. */

test('every entry type and hard case round-trips byte for byte, deterministically', async () => {
  const items = [...hardCases(), item(h('dev/big', 'char', { devmajor: 4095, devminor: 3000000 }))];
  const tar = await writeTar(items);
  assert.deepEqual(tar, await writeTar(hardCases().concat(items.slice(-1))), 'same input, same bytes');
  const back = await readAll(tar);
  assert.deepStrictEqual(back, items);
  assert.deepStrictEqual(await readAllBuffered(tar), items, 'buffer() reads what the body stream reads');
  assert.equal(back.find((e) => e.header.path === 'd/cap')!.header.xattrs.get('security.capability')!.toString('hex'), CAP.toString('hex'));
  assert.deepEqual(await writeTar(back), tar, 'what was read writes back identically');
  // Go archive/tar's layout: PAX header "DIR/PaxHeaders.0/NAME"; none when ustar suffices.
  assert.ok(tar.includes('d/PaxHeaders.0/cap\0'));
  assert.ok(!tar.includes('d/PaxHeaders.0/empty'));
  assert.ok(tar.includes('SCHILY.xattr.security.capability=') && tar.includes('gid=4294967294\n') && !tar.includes('uid=300000'));
});

test('PAX only where ustar cannot hold a value; big sizes use PAX and base-256', async () => {
  const pax = (header: TarHeader) => encodeHeader(header).toString('latin1', 156, 157) === 'x';
  assert.equal(pax(h('a', 'file', { uid: 2097151, gid: 2097151 })), false);
  assert.equal(pax(h('a', 'file', { uid: 2097152 })), true);
  assert.equal(pax(h('a', 'file', { uname: 'u'.repeat(32) })), false);
  assert.equal(pax(h('a', 'file', { uname: 'u'.repeat(33) })), true);
  assert.equal(pax(h(SPLIT_NAME, 'file')), false);
  assert.equal(pax(h('a', 'file', { mtime: { sec: 5, nsec: 1 } })), true);
  const huge = 10 * 2 ** 30;
  const block = encodeHeader(h('huge', 'file', { size: huge }));
  assert.ok(block.includes(`size=${huge}\n`));
  assert.equal(block[block.length - 512 + 124]! & 0x80, 0x80, 'base-256 size field');
  for await (const entry of readTar(Readable.from([block]))) {
    assert.equal(entry.header.size, huge);
    break; // the body is not there: stop after the header
  }
  assert.throws(() => encodeHeader(h('../x', 'file')), /escapes the root/);
  for (const value of [-3, 2 ** 40, 4294967294]) {
    const field = Buffer.alloc(8);
    formatNumeric(field, 0, 8, value);
    assert.equal(parseNumeric(field, 'test'), value);
  }
  // A v7 header (no magic, typeflag NUL): a trailing slash makes a directory.
  const v7 = Buffer.from(encodeHeader(h('olddir', 'directory', { uname: 'root' })));
  v7.fill(0, 156, 157).fill(0, 257, 345);
  setChecksum(v7);
  const [old] = await readAll(Buffer.concat([v7, Buffer.alloc(1024)]));
  assert.deepEqual([old!.header.path, old!.header.type, old!.header.uname], ['olddir', 'directory', undefined]);
});

test('a 20 MB body streams through writer and reader without being buffered', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const size = 20 << 20;
  const chunk = Buffer.alloc(64 << 10, 0x5a);
  let produced = 0;
  let consumed = 0;
  let ahead = 0;
  const writer = new TarWriter();
  const adding = (async () => {
    function* chunks() {
      for (; produced < size; produced += chunk.length) yield chunk;
    }
    const body = Readable.from(chunks(), { objectMode: false });
    await writer.add(h('big', 'file', { size }), body);
    const after = file('after', 'x');
    await writer.add(after.header, after.body);
    await writer.finish();
  })();
  gc();
  const base = process.memoryUsage();
  let peak = 0;
  const hash = createHash('sha256');
  const seen: string[] = [];
  for await (const entry of readTar(writer.stream)) {
    seen.push(entry.header.path);
    for await (const data of entry.body) {
      consumed += (data as Buffer).length;
      if (entry.header.path === 'big') hash.update(data as Buffer);
      ahead = Math.max(ahead, produced - consumed);
      if (consumed % (4 << 20) < (data as Buffer).length) {
        gc();
        const now = process.memoryUsage();
        peak = Math.max(peak, now.arrayBuffers - base.arrayBuffers + now.heapUsed - base.heapUsed);
      }
    }
  }
  await adding;
  assert.deepEqual(seen, ['big', 'after']);
  assert.equal(hash.digest('hex'), sha256(Buffer.alloc(size, 0x5a)));
  assert.ok(ahead < 4 << 20, `producer ran ${ahead} bytes ahead of the consumer`);
  assert.ok(peak < 16 << 20, `memory grew by ${peak} bytes`);
});

test('bodies nobody reads are skipped; the input stays readable after the end blocks', async () => {
  const tar = await writeTar([file('a', 'x'.repeat(100000)), file('b', 'bee'), file('c', 'y'.repeat(3000)), file('d', 'dee')]);
  const paths: string[] = [];
  let i = 0;
  const input = new PassThrough();
  chunked(Buffer.concat([tar, Buffer.alloc(10240)]), 4096).pipe(input);
  let bytes = 0;
  for await (const entry of readTar(input)) {
    paths.push(entry.header.path);
    if (i === 1) entry.body.resume();
    if (i === 3) assert.equal((await collect(entry.body)).toString(), 'dee');
    i++; // entries 0 and 2: never touched
  }
  input.on('data', (data: Buffer) => (bytes += data.length));
  input.resume();
  await finished(input);
  assert.deepEqual(paths, ['a', 'b', 'c', 'd']);
  assert.ok(bytes >= 10240, 'padding after the end blocks is still there for the caller');
});

test('end of archive: two zero blocks, a lone zero block at EOF, or plain EOF after an entry', async () => {
  const tar = await writeTar([file('a', 'abc')]);
  const entryOnly = tar.subarray(0, 1024);
  for (const input of [tar, entryOnly, Buffer.concat([entryOnly, Buffer.alloc(512)])]) {
    assert.deepEqual((await readAll(input)).map((e) => e.body.toString()), ['abc']);
  }
  assert.deepEqual(await readAll(Buffer.alloc(0)), []);
});

test('header checksums: the unsigned sum as POSIX says, the signed sum of old tars, nothing else', () => {
  const block = encodeHeader({ path: 'caf\u00e9-\u00fcber', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() });
  const ustar = block.subarray(block.length - 512); // after the PAX record for the non-ASCII name
  // Bytes above 127 in the ustar name (truncated to ASCII by the writer): put some there.
  ustar[0] = 0xc3;
  ustar[1] = 0xa9;
  const sums = () => {
    let unsigned = 8 * 0x20;
    let signed = 8 * 0x20;
    for (let i = 0; i < 512; i++) {
      if (i >= 148 && i < 156) continue;
      unsigned += ustar[i]!;
      signed += ustar[i]! > 127 ? ustar[i]! - 256 : ustar[i]!;
    }
    return { unsigned, signed };
  };
  const { unsigned, signed } = sums();
  assert.notEqual(unsigned, signed);
  for (const sum of [unsigned, signed]) {
    formatNumeric(ustar, 148, 7, sum);
    ustar[155] = 0x20;
    assert.ok(checksumMatches(ustar, 'test'), `checksum ${sum} accepted`);
  }
  formatNumeric(ustar, 148, 7, unsigned + 1);
  assert.ok(!checksumMatches(ustar, 'test'), 'a wrong checksum is refused');
  ustar.fill(0x41, 148, 156);
  assert.ok(!checksumMatches(ustar, 'test'), 'a checksum field that is no number is refused');
});

test('truncated input, escaping paths and bad checksums are format errors', async () => {
  const tar = await writeTar([file('a', 'z'.repeat(5000)), file('d/cap', 'c', { xattrs: new Map([['security.capability', CAP]]) })]);
  await rejectsFormat(readAll(tar.subarray(0, 1500)), /^tar: truncated tar/);
  await rejectsFormat(readAll(tar.subarray(0, 1500), { what: 'what-is-it' }), /^what-is-it: truncated tar/);
  await rejectsFormat(readAll(tar.subarray(0, 512 + 5120 + 100)), /truncated tar/); // inside the PAX header
  await rejectsFormat(readAll(tar.subarray(0, 512 + 5120 + 512 + 30)), /truncated tar/); // inside the PAX records
  // Bodies never read: the iterator notices the truncation itself.
  await rejectsFormat((async () => { for await (const entry of readTar(chunked(tar.subarray(0, 3000)))) void entry; })(), /truncated tar/);

  const crafted = (mutate: (block: Buffer) => void) => {
    const block = Buffer.from(encodeHeader(h('placeholder', 'hardlink', { linkname: 'target' })));
    mutate(block);
    setChecksum(block);
    return Buffer.concat([block, Buffer.alloc(1024)]);
  };
  const setField = (block: Buffer, offset: number, text: string) => block.fill(0, offset, offset + 100).write(text, offset, 'latin1');
  await rejectsFormat(readAll(crafted((b) => setField(b, 0, '../escape')), { what: 'layer 2' }), /^layer 2: .*"\.\.\/escape" escapes the root/);
  await rejectsFormat(readAll(crafted((b) => setField(b, 0, 'a/../../escape'))), /escapes the root/);
  await rejectsFormat(readAll(crafted((b) => setField(b, 157, '/../../etc/shadow'))), /hardlink "placeholder" points outside the root/);
  const inside = await readAll(crafted((b) => setField(b, 157, '/etc/./shadow')));
  assert.equal(inside[0]!.header.linkname, 'etc/shadow');
  const bad = Buffer.from(tar);
  bad[3] = 0x01;
  await rejectsFormat(readAll(bad), /bad tar header checksum at offset 0/);
  await rejectsFormat(readAll(Buffer.from('this is not a tar file'.repeat(40))), /checksum/);
});

test('PAX global headers are ignored like Docker does, or applied on request; LIBARCHIVE.xattr is decoded', async () => {
  const meta = (name: string, flag: string, records: Buffer) => {
    const block = Buffer.from(encodeHeader(h(name, 'file', { size: records.length })));
    block.write(flag, 156, 'latin1');
    setChecksum(block);
    return Buffer.concat([block, records, Buffer.alloc(512 - (records.length % 512))]);
  };
  const records = Buffer.concat([encodePaxRecord('comment', Buffer.from('global')), encodePaxRecord('SCHILY.xattr.user.g', Buffer.from([0, 1]))]);
  const local = encodePaxRecord('LIBARCHIVE.xattr.user.a%3Db', Buffer.from(Buffer.from([0xde, 0xad, 0]).toString('base64')));
  const tar = Buffer.concat([meta('pax_global_header', 'g', records), meta('PaxHeaders.0/f', 'x', local), await writeTar([file('f', 'hi')])]);
  const [ignored] = await readAll(tar);
  assert.deepEqual([...ignored!.header.xattrs], [['user.a=b', Buffer.from([0xde, 0xad, 0])]]);
  assert.equal(ignored!.header.paxExtra, undefined);
  const [applied] = await readAll(tar, { globalHeaders: 'apply' });
  assert.deepEqual(applied!.header.xattrs.get('user.g'), Buffer.from([0, 1]));
  assert.deepEqual(applied!.header.paxExtra, new Map([['comment', Buffer.from('global')]]));
  assert.equal(applied!.body.toString(), 'hi');
});

test('a tar made by tar-stream reads fine', async () => {
  const pack = tarStream.pack();
  pack.entry({ name: 'dir/', type: 'directory', mode: 0o755, mtime: new Date(1700000000000), uid: 1000, gid: 1000, uname: 'u', gname: 'g' });
  pack.entry({ name: `dir/${'l'.repeat(200)}`, mode: 0o640, mtime: new Date(1700000000000), uid: 1000, gid: 1000 }, 'long');
  pack.entry({ name: 'dir/link', type: 'symlink', linkname: 'target', mtime: new Date(1700000000000) });
  pack.finalize();
  const entries = await readAll(await collect(pack as unknown as Readable));
  assert.deepEqual(entries.map((e) => [e.header.path, e.header.type, e.header.mode, e.header.uid, e.header.mtime.sec, e.body.toString()]), [
    ['dir', 'directory', 0o755, 1000, 1700000000, ''],
    [`dir/${'l'.repeat(200)}`, 'file', 0o640, 1000, 1700000000, 'long'],
    ['dir/link', 'symlink', 0o644, 0, 1700000000, ''],
  ]);
});

test('writer: wrong body length, closed output; reader: input errors pass through', async () => {
  const writer = new TarWriter();
  const out = collect(writer.stream);
  await assert.rejects(writer.add(h('f', 'file', { size: 3 }), Buffer.from('four')), (err: unknown) => isBuildfleetError(err) && err.kind === 'integrity');
  await assert.rejects(out);
  const short = new TarWriter();
  void collect(short.stream).catch(() => {});
  await assert.rejects(short.add(h('f', 'file', { size: 10 }), Readable.from([Buffer.from('abc')])), /has 3 bytes of content, its header says 10/);
  const stuck = new TarWriter(); // nobody reads: add waits on backpressure until the output is destroyed
  const adding = stuck.add(h('big', 'file', { size: 3 << 20 }), Buffer.alloc(3 << 20));
  setImmediate(() => stuck.stream.destroy());
  await assert.rejects(adding, /output stream was closed/);

  const input = new PassThrough();
  const tar = await writeTar([file('a', 'x'.repeat(4000))]);
  input.write(tar.subarray(0, 1000));
  setImmediate(() => input.destroy(new Error('network went away')));
  await assert.rejects(readAll(input), /network went away/);
});

test("the mode field's file-type bits (as Go's archive/tar writes them) are kept apart from the permissions and written back", async () => {
  // Go (so Docker) puts the file type in the mode field: 0040755 for a directory, 0100644 for a file.
  const input = await writeTar([item(h('dir', 'directory', { mode: 0o755 })), file('dir/f', 'x', { mode: 0o644 })]);
  for (const [offset, field] of [[0, '0040755'], [512, '0100644']] as const) {
    input.write(field, offset + 100, 'latin1');
    setChecksum(input.subarray(offset, offset + 512));
  }
  const items = await readAll(input);
  assert.deepEqual(items.map((i) => [i.header.mode, i.header.modeTypeBits]), [
    [0o755, 0o40000],
    [0o644, 0o100000],
  ]);
  const written = await writeTar(items);
  assert.ok(written.equals(input), 'the archive reads back and writes out byte for byte');
});

test('each entry says where its bytes lie, and whether they are one plain ustar block that another archive can take as they are', async () => {
  const items = hardCases();
  const tar = await writeTar(items);
  const seen: Array<{ path: string; start: number; end: number; plain: boolean }> = [];
  for await (const entry of readTar(chunked(tar))) seen.push({ path: entry.header.path, start: entry.start, end: entry.end, plain: entry.plain });
  // PAX-headed (xattrs, sub-second or big ids, long names, extra records) and directories (whose
  // names end in "/", not their normal form) are not plain; plain ustar files, links and devices are.
  const plain = seen.filter((s) => s.plain).map((s) => s.path);
  assert.deepEqual(plain, ['d/setid', 'd/empty', SPLIT_NAME, 'd/.wh.gone', 'd/.wh..wh..opq', 'dev/null', 'dev/sda', 'd/fifo', 'd/hardlink', 'd/abs-symlink']);
  for (const [i, span] of seen.entries()) {
    if (i > 0) assert.equal(span.start, seen[i - 1]!.end, `${span.path} starts where the entry before it ends`);
    // The bytes start..end alone are that entry, extension headers and all.
    assert.deepStrictEqual(await readAll(tar.subarray(span.start, span.end)), [items[i]], span.path);
  }
  // Plain entries copied as bytes make an archive of exactly those entries.
  const copied = Buffer.concat([...seen.filter((s) => s.plain).map((s) => tar.subarray(s.start, s.end)), Buffer.alloc(1024)]);
  assert.deepStrictEqual(await readAll(copied), items.filter((it) => plain.includes(it.header.path)));
  // A name not in normal form (as other writers make them) or a GNU-format header is not plain.
  const other = tarStream.pack();
  other.entry({ name: './x', mtime: new Date(0) }, 'x');
  other.entry({ name: 'y', mtime: new Date(0) }, 'y');
  other.finalize();
  const otherTar = await collect(other as unknown as Readable);
  const flags = [];
  for await (const entry of readTar(chunked(otherTar))) flags.push([entry.header.path, entry.plain]);
  assert.equal(otherTar.toString('latin1', 257, 265), 'ustar\u000000', 'tar-stream writes POSIX ustar');
  assert.deepEqual(flags, [['x', false], ['y', true]]);
  const setid = seen.find((s) => s.path === 'd/setid')!;
  const gnu = Buffer.from(tar.subarray(setid.start, setid.end));
  gnu.write('ustar  \0', 257, 'latin1');
  setChecksum(gnu.subarray(0, 512));
  for await (const entry of readTar(chunked(gnu))) assert.deepEqual([entry.header.path, entry.plain], ['d/setid', false], 'GNU format: its atime and ctime fields would go along');
});
