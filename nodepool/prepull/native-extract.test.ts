import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdir, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { tempDir } from '../../test/helpers/real.js';
import { END_OF_ARCHIVE, padded, rawHeader } from '../../test/helpers/raw-tar.js';
import { UnsupportedLayer } from './layer-walk.js';
import { extractLayerNatively, nativeExtraction } from './native-extract.js';

/**
 * The native extractor on hand-made layers: what it writes, and what it refuses without writing
 * a byte outside the diff dir. (The oracle tests, install.test.ts and tar-split-docker.test.ts,
 * compare it with Docker on real images.) Needs root (owners, trusted.* xattrs, devices).
 */
const file = (name: string, data: string) => [rawHeader(name, '0', Buffer.byteLength(data)), padded(data)];
const tarOf = (...parts: Buffer[][]) => Buffer.concat([...parts.flat(), END_OF_ARCHIVE]);

describe('native layer extraction', { skip: nativeExtraction('gzip') ? false : 'the native addon is not built (npm run build:native)' }, () => {
  let work: { path: string; remove(): Promise<void> };
  let n = 0;
  before(async () => {
    work = await tempDir('buildfleet-native-extract-');
  });
  after(async () => {
    await work?.remove();
  });

  async function extract(layer: Buffer, compression: 'gzip' | 'none' = 'gzip', chunk = 7000) {
    const diffDir = join(work.path, `layer-${n++}`);
    await mkdir(diffDir);
    const bytes = compression === 'gzip' ? gzipSync(layer) : layer;
    // Odd-sized chunks: headers and payloads split across pushes.
    const chunks = Array.from({ length: Math.ceil(bytes.length / chunk) }, (_, i) => bytes.subarray(i * chunk, (i + 1) * chunk));
    const extracted = extractLayerNatively([Readable.from(chunks)], { compression, diffDir, what: 'test layer' }, new AbortController().signal);
    return { diffDir, extracted };
  }

  test('files, directories, links, whiteouts and opaque markers are written as Docker\'s applier leaves them', async () => {
    const big = 'x'.repeat(300_000);
    const { diffDir, extracted } = await extract(
      tarOf(
        [rawHeader('./', '5', 0)],
        [rawHeader('etc/', '5', 0)],
        file('etc/hosts', '127.0.0.1 localhost\n'),
        file('big/blob', big),
        [rawHeader('etc/hosts.link', '1', 0, { linkname: 'etc/hosts' })],
        [rawHeader('etc/alias', '2', 0, { linkname: 'hosts' })],
        file('gone/.wh.removed', ''),
        file('kept/.wh..wh..opq', ''),
      ),
    );
    const result = await extracted;
    assert.match(result.diffId, /^sha256:[0-9a-f]{64}$/);
    assert.equal(result.entries, 8);
    assert.equal(result.sizeOnDisk, 20 + big.length + 'hosts'.length);
    assert.equal(await readFile(join(diffDir, 'etc/hosts'), 'utf8'), '127.0.0.1 localhost\n');
    assert.equal((await readFile(join(diffDir, 'big/blob'))).length, big.length);
    assert.equal((await stat(join(diffDir, 'etc/hosts.link'))).ino, (await stat(join(diffDir, 'etc/hosts'))).ino);
    assert.equal(await readlink(join(diffDir, 'etc/alias')), 'hosts');
    const whiteout = await lstat(join(diffDir, 'gone/removed'));
    assert.ok(whiteout.isCharacterDevice() && whiteout.rdev === 0 && (whiteout.mode & 0o7777) === 0, 'a whiteout is the 0:0 character device');
    assert.equal((await stat(join(diffDir, 'big'))).mode & 0o7777, 0o755, 'a parent the layer did not list is 0755');
    assert.equal((await stat(join(diffDir, 'etc/hosts'))).mtimeMs, 1_700_000_000_000);
    assert.equal((await stat(join(diffDir, 'etc'))).mtimeMs, 1_700_000_000_000, 'directory times are set after their children');
    assert.ok(result.tarSplit.length > 0);
  });

  test('many gzip members (as parallel compressors write them) give the same files and diff_id as one; a member cut short or corrupt is an error', async () => {
    const layer = tarOf(...Array.from({ length: 40 }, (_, i) => file(`dir${i % 4}/file${i}`, `${i}`.repeat(20_000 + i))));
    const members = (tar: Buffer, size: number) => Buffer.concat(Array.from({ length: Math.ceil(tar.length / size) }, (_, i) => gzipSync(tar.subarray(i * size, (i + 1) * size))));
    const one = await (await extract(layer)).extracted;
    for (const [size, chunk] of [[64 * 1024, 7000], [100_000, 300_000], [5_000, 1 << 20]] as const) {
      const diffDir = join(work.path, `members-${n++}`);
      await mkdir(diffDir);
      const bytes = members(layer, size);
      const chunks = Array.from({ length: Math.ceil(bytes.length / chunk) }, (_, i) => bytes.subarray(i * chunk, (i + 1) * chunk));
      const result = await extractLayerNatively([Readable.from(chunks)], { compression: 'gzip', diffDir, what: 'test layer' }, new AbortController().signal);
      assert.equal(result.diffId, one.diffId, `members of ${size} bytes, chunks of ${chunk}`);
      assert.equal(result.entries, 40);
      assert.equal(await readFile(join(diffDir, 'dir3/file39'), 'utf8'), '39'.repeat(20_039));
    }
    const bytes = members(layer, 64 * 1024);
    const corrupt = Buffer.from(bytes);
    corrupt[Math.floor(corrupt.length / 2)]! ^= 0xff;
    for (const [bad, message] of [[bytes.subarray(0, bytes.length - 100), /unexpected end of file|truncated/], [corrupt, /corrupt|invalid|incorrect|checksum|truncated/]] as const) {
      const diffDir = join(work.path, `members-${n++}`);
      await mkdir(diffDir);
      await assert.rejects(extractLayerNatively([Readable.from([bad])], { compression: 'gzip', diffDir, what: 'test layer' }, new AbortController().signal), (err: Error) => err instanceof BuildfleetError && message.test(err.message));
    }
  });

  test('a path that leaves the root, or runs through a symlink the layer made, is refused and nothing is written outside', async () => {
    const outside = join(work.path, 'outside');
    await mkdir(outside);
    const escapes = [
      tarOf(file('../escaped', 'no')),
      tarOf([rawHeader('link', '2', 0, { linkname: outside })], file('link/escaped', 'no')),
      tarOf([rawHeader('link', '2', 0, { linkname: outside })], file('link/.wh.escaped', '')),
      tarOf([rawHeader('hard', '1', 0, { linkname: '/etc/passwd' })]),
      tarOf(file('plain', 'a file'), file('plain/below', 'no')),
    ];
    for (const layer of escapes) {
      const { extracted } = await extract(layer);
      await assert.rejects(extracted, (err: Error) => err instanceof UnsupportedLayer && /^test layer: /.test(err.message));
    }
    assert.deepEqual(await readdir(outside), []);
  });

  test('corrupt and truncated input is one clear error', async () => {
    const layer = tarOf(file('a', 'some content'));
    const corrupt = gzipSync(layer);
    corrupt[corrupt.length - 6]! ^= 0xff; // the CRC-32 in the trailer
    const cases: Array<[Buffer, 'gzip' | 'none', RegExp]> = [
      [corrupt, 'gzip', /gzip data is corrupt|invalid/],
      [gzipSync(layer).subarray(0, 40), 'gzip', /unexpected end of file/],
      [layer.subarray(0, 520), 'none', /truncated tar \(the input ended inside a file's data/],
      [Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(412)]), 'none', /bad header checksum/],
    ];
    for (const [bytes, compression, message] of cases) {
      const diffDir = join(work.path, `bad-${n++}`);
      await mkdir(diffDir);
      await assert.rejects(extractLayerNatively([Readable.from([bytes])], { compression, diffDir, what: 'test layer' }, new AbortController().signal), (err: Error) => err instanceof BuildfleetError && err.kind === 'format' && message.test(err.message));
      await rm(diffDir, { recursive: true });
    }
  });

  test('an abort stops the extraction with the abort\'s reason', async () => {
    const controller = new AbortController();
    const diffDir = join(work.path, `aborted-${n++}`);
    await mkdir(diffDir);
    const endless = Readable.from(
      (async function* () {
        yield gzipSync(tarOf(file('first', 'one')).subarray(0, 1024));
        controller.abort(new Error('stopped by the test'));
        await new Promise((resolve) => setTimeout(resolve, 10));
        yield Buffer.alloc(2 << 20);
      })(),
    );
    await assert.rejects(extractLayerNatively([endless], { compression: 'gzip', diffDir, what: 'test layer' }, controller.signal), /stopped by the test|aborted/);
  });
});
