import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import tar from 'tar-stream';
import { gzipSync } from 'node:zlib';
import { tempDir } from '../../test/helpers/real.js';
import { generateImage } from '../../bench/image-generator.js';
import { sha256Digest } from '../oci/digest.js';
import { BuildfleetError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import { buildManifest } from '../mutate/manifest.js';
import { openDestination, openSource } from '../transports/index.js';
import { squashImage, type SquashOptions, type SquashProgress } from './squash.js';
import { readTar } from '../tar/reader.js';
import type { TarHeader } from '../tar/entry.js';
import { decodeName, encodeName } from '../tar/fields.js';
import { TarWriter } from '../tar/writer.js';

// No daemon: images are generated into OCI layouts; the Docker oracle suite is in test/squash-conformance/.
let work: { path: string; remove(): Promise<void> };
let layout: string;

before(async () => {
  work = await tempDir();
  layout = join(work.path, 'input');
  await generateImage(await openDestination(`oci:${layout}:v1`), { layers: 6, totalBytes: 6_000_000, filesPerLayer: 50, format: 'oci' });
});

after(async () => {
  await work?.remove();
});

async function squash(src: string, dst: string, options: SquashOptions = {}) {
  return squashImage(await openSource(src), await openDestination(dst), { tmpDir: work.path, ...options });
}

test('progress counts every content byte, with or without compression', async () => {
  for (const compression of ['none', 'gzip'] as const) {
    const events: SquashProgress[] = [];
    const report = await squash(`oci:${layout}:v1`, `oci:${join(work.path, 'progress')}:${compression}`, { compression, onProgress: (e) => events.push(e) });
    const writes = events.filter((e) => e.phase === 'write');
    const last = writes[writes.length - 1];
    assert.ok(last && last.phase === 'write' && last.bytes === last.totalBytes && last.totalBytes > 5_000_000, `${compression}: ${JSON.stringify(last)}`);
    assert.equal(events.filter((e) => e.phase === 'index').length, 6);
    assert.equal(report.layers.after, 1);
  }
});

test('diff_ids do not depend on the compressor; zstd reads back through our own source to the same tree', async () => {
  const reports = [];
  for (const compression of ['none', 'gzip', 'zstd'] as const) {
    reports.push(await squash(`oci:${layout}:v1`, `oci:${join(work.path, 'codecs')}:${compression}`, { compression, layers: 3 }));
  }
  const diffIds = reports.map((r) => r.outputLayers.map((l) => l.diffId));
  assert.deepEqual(diffIds[1], diffIds[0]);
  assert.deepEqual(diffIds[2], diffIds[0]);
  const zstdImage = await (await openSource(`oci:${join(work.path, 'codecs')}:zstd`)).resolve();
  assert.ok(zstdImage.manifest.layers.every((l) => l.mediaType === MediaType.ociLayerZstd));
  // Read the zstd image back through our own source (and the zstd decoder): the tree is the original's.
  assert.deepEqual(await flatTree(`oci:${join(work.path, 'codecs')}:zstd`), await flatTree(`oci:${layout}:v1`));
});

/** Every entry of an image's merged tree with its content digest, by squashing it flat and reading that tar. */
async function flatTree(ref: string): Promise<string[]> {
  const flat = `oci:${join(work.path, 'flat')}:${Math.random().toString(36).slice(2)}`;
  await squash(ref, flat, { compression: 'none' });
  const source = await openSource(flat);
  const image = await source.resolve();
  const lines: string[] = [];
  for await (const { header, body } of readTar(await source.openBlob(image.manifest.layers[0]!))) {
    const content = header.type === 'file' ? sha256Digest(await buffer(body)) : (body.resume(), '');
    lines.push([header.path, header.type, header.mode.toString(8), header.uid, header.gid, header.size, header.linkname ?? '', content].join(' '));
  }
  return lines.sort();
}

/** Every output layer's entries, header and content, in order. */
async function layerEntries(ref: string): Promise<string[][]> {
  const source = await openSource(ref);
  const image = await source.resolve();
  const layers: string[][] = [];
  for (const layer of image.manifest.layers) {
    const entries: string[] = [];
    for await (const { header, body } of readTar(await source.openBlob(layer))) {
      const content = header.type === 'file' ? sha256Digest(await buffer(body)) : (body.resume(), '');
      entries.push(JSON.stringify({ ...header, xattrs: [...header.xattrs].map(([k, v]) => [k, v.toString('hex')]), content }));
    }
    layers.push(entries);
  }
  return layers;
}

test('entries copied as the bytes of their spool say what entries written anew say', async () => {
  const tricky = await imageOf('copied-as-bytes', [
    await tarOf([{ name: 'dir', type: 'directory' }, { name: 'dir/a', body: 'a'.repeat(700) }, { name: 'dir/linked', type: 'link', linkname: 'dir/a' }, { name: './dotted', body: 'not in normal form' }, { name: `long/${'n'.repeat(150)}`, body: 'PAX path' }, { name: 'before', body: 'b' }, { name: 'gone', body: 'x' }, { name: 'after', body: 'a' }]),
    await tarOf([{ name: '.wh.gone' }, { name: 'dir/a', body: 'overwritten: the link keeps the old bytes' }, { name: 'b', body: 'b' }]),
  ]);
  for (const src of [tricky, `oci:${layout}:v1`]) {
    for (const layers of [1, 3]) {
      const ref = (name: string) => `oci:${join(work.path, 'copied')}:${name}-${layers}-${src === tricky ? 'tricky' : 'generated'}`;
      await squash(src, ref('bytes'), { layers, compression: 'none' });
      // A SOURCE_DATE_EPOCH no time reaches changes nothing, but every entry is then encoded anew.
      await squash(src, ref('encoded'), { layers, compression: 'none', sourceDateEpoch: 4_000_000_000 });
      assert.deepEqual(await layerEntries(ref('bytes')), await layerEntries(ref('encoded')), `${src}, ${layers} layers`);
    }
  }
});

test('the same input and options give the same bytes', async () => {
  const a = await squash(`oci:${layout}:v1`, `oci:${join(work.path, 'det')}:a`, { layers: 2, sourceDateEpoch: 1_600_000_000 });
  const b = await squash(`oci:${layout}:v1`, `oci:${join(work.path, 'det')}:b`, { layers: 2, sourceDateEpoch: 1_600_000_000 });
  assert.equal(a.manifestDigest, b.manifestDigest);
  const config = JSON.parse((await (await openSource(`oci:${join(work.path, 'det')}:a`)).resolve()).configBytes.toString());
  assert.equal(config.created, '2020-09-13T12:26:40.000Z');
  assert.equal(config.history.filter((h: { empty_layer?: boolean }) => !h.empty_layer).length, 2, 'one non-empty history entry per output layer');
  assert.equal(config.history.filter((h: { empty_layer?: boolean }) => h.empty_layer).length, 6, 'old entries kept, marked empty');
});

/** An OCI layout with hand-made layers (uncompressed tars, gzipped here). */
async function imageOf(name: string, layers: Buffer[], tamper?: (blobs: Buffer[]) => void, compress: (layer: Buffer) => Buffer = gzipSync): Promise<string> {
  const dir = join(work.path, name);
  const destination = await openDestination(`oci:${dir}:v1`);
  const blobs = layers.map(compress);
  const descriptors = blobs.map((blob) => ({ mediaType: MediaType.ociLayerGzip, digest: sha256Digest(blob), size: blob.length }));
  tamper?.(blobs);
  for (const blob of blobs) await destination.putBlob(async () => Readable.from([blob]), { mediaType: MediaType.ociLayerGzip });
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256Digest(l)) } }));
  const configDescriptor = await destination.putBlob(async () => Readable.from([config]), { mediaType: MediaType.ociConfig });
  const manifest = buildManifest('oci', configDescriptor, descriptors);
  // A tampered blob is stored under its new digest: write the manifest by hand so it names the old one.
  if (tamper) {
    for (const [i, blob] of blobs.entries()) {
      await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
      await writeFile(join(dir, 'blobs/sha256', descriptors[i]!.digest.slice(7)), blob);
    }
  }
  await destination.putManifest(manifest, MediaType.ociManifest);
  await destination.commit();
  return `oci:${dir}:v1`;
}

async function tarOf(entries: Array<{ name: string; type?: 'file' | 'link' | 'directory'; linkname?: string; body?: string }>): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) pack.entry({ name: e.name, type: e.type ?? 'file', ...(e.linkname && { linkname: e.linkname }), mtime: new Date(0) }, e.body ?? '');
  pack.finalize();
  return buffer(pack as unknown as Readable);
}

async function rejectsCleanly(src: string, pattern: RegExp, kind: string): Promise<void> {
  const out = join(work.path, `out-${Math.random().toString(36).slice(2)}`);
  await assert.rejects(squash(src, `oci:${out}:v1`), (err: unknown) => err instanceof BuildfleetError && err.kind === kind && pattern.test(err.message) && !err.message.includes('\n'));
  if (existsSync(join(out, 'index.json'))) assert.deepEqual(JSON.parse(await readFile(join(out, 'index.json'), 'utf8')).manifests, [], 'no image at the destination');
}

test('bad input: a path escaping the root, a hardlink to nothing, a corrupt or truncated layer', async () => {
  await rejectsCleanly(await imageOf('escape', [await tarOf([{ name: '../etc/evil', body: 'x' }])]), /\.\.\/etc\/evil|escap/i, 'format');
  await rejectsCleanly(await imageOf('dangling', [await tarOf([{ name: 'a', body: 'x' }]), await tarOf([{ name: 'b', type: 'link', linkname: 'nowhere' }])]), /hardlink b -> nowhere/, 'format');
  const good = [await tarOf([{ name: 'f', body: 'hello '.repeat(1000) }])];
  await rejectsCleanly(await imageOf('corrupt', good, (blobs) => { const blob = blobs[0]!; blob[blob.length - 20] = blob[blob.length - 20]! ^ 0xff; }), /digest|does not match|corrupt/i, 'integrity');
  // A cut-off gzip stream whose digest is right: only decompression can tell.
  const cutOff = (layer: Buffer) => { const gz = gzipSync(layer); return gz.subarray(0, gz.length - 12); };
  await rejectsCleanly(await imageOf('truncated', good, undefined, cutOff), /truncated|unexpected end/i, 'integrity');
});

test('names and link targets that are not UTF-8 survive byte for byte: whiteouts and hardlinks of them, K=1, K=4, --from-layer', async () => {
  const n = (...parts: Array<string | number>) => decodeName(Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.of(p)))));
  const dir = n('dir', 0xfe);
  const bad = `${dir}/${n('bad', 0xff, 'name')}`;
  const layerTar = async (items: Array<[TarHeader, string?]>) => {
    const writer = new TarWriter();
    const out = buffer(writer.stream);
    for (const [header, body] of items) await writer.add(header, body === undefined ? undefined : Buffer.from(body));
    await writer.finish();
    return out;
  };
  const hd = (path: string, type: TarHeader['type'], extra: Partial<TarHeader> = {}): TarHeader => ({ path, type, mode: type === 'directory' ? 0o755 : 0o644, uid: 0, gid: 0, size: 0, mtime: { sec: 1_700_000_000, nsec: 0 }, xattrs: new Map(), ...extra });
  const src = await imageOf('non-utf8', [
    await layerTar([[hd(dir, 'directory')], [hd(bad, 'file', { size: 3 }), 'bad'], [hd(n('gone', 0xff), 'file', { size: 1 }), 'g'], [hd(n('lnk', 0xfd), 'symlink', { mode: 0o777, linkname: bad })], [hd(`${dir}/${n('hard', 0xfc)}`, 'hardlink', { linkname: bad })]]),
    await layerTar([[hd(n('.wh.gone', 0xff), 'file')], [hd(n('new', 0xfb, 'é'), 'file', { size: 1 }), 'n'], [hd(n('hard', 0xfa), 'hardlink', { linkname: n('new', 0xfb, 'é') })]]),
  ]);
  const upper = [`${n('new', 0xfb, 'é')} file`, `${n('hard', 0xfa)} hardlink ${n('new', 0xfb, 'é')}`];
  const expected = [`${dir}/ directory`, `${bad} file`, `${dir}/${n('hard', 0xfc)} hardlink ${bad}`, `${n('lnk', 0xfd)} symlink ${bad}`, ...upper];
  for (const options of [{ layers: 1 }, { layers: 4 }, { fromLayer: 2 }] satisfies SquashOptions[]) {
    const ref = `oci:${join(work.path, 'non-utf8-out')}:${JSON.stringify(options).replace(/\W/g, '')}`;
    await squash(src, ref, { ...options, compression: 'none' });
    const source = await openSource(ref);
    const layers = (await source.resolve()).manifest.layers;
    const seen: string[] = [];
    for (const layer of 'fromLayer' in options ? layers.slice(1) : layers) {
      const raw = await buffer(await source.openBlob(layer));
      for await (const { header } of readTar(Readable.from([raw]))) {
        assert.ok(raw.includes(encodeName(header.path)), `${header.path}: its bytes are in the tar`);
        if (header.type !== 'directory' || header.path === dir) seen.push([header.path + (header.type === 'directory' ? '/' : ''), header.type, header.linkname ?? ''].join(' ').trim());
      }
    }
    const want = 'fromLayer' in options ? [`${n('.wh.gone', 0xff)} file`, ...upper] : expected;
    assert.deepEqual([...new Set(seen)].sort(), [...want].sort(), JSON.stringify(options));
  }
});
