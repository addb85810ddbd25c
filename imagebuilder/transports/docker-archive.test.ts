import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { BuildfleetError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import { sha256Digest, digestHex } from '../oci/digest.js';
import { openArchiveDestination, openArchiveSource, writeDockerArchive } from './docker-archive.js';
import { archiveRef, copyBlobsAndManifest } from '../../test/helpers/transports.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'buildfleet-archive-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function tarOf(entries: Array<{ name: string; body?: string | Buffer; type?: 'file' | 'directory' | 'symlink'; linkname?: string }>): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname!, mtime: new Date(0) });
    else if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory', mtime: new Date(0) });
    else pack.entry({ name: e.name, mtime: new Date(0) }, e.body ?? '');
  }
  pack.finalize();
  return buffer(pack as unknown as AsyncIterable<Buffer>);
}

function configFor(layers: Buffer[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['A=1'], Cmd: ['sh'], WorkingDir: '/w', Labels: { l: 'v' } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256Digest(l)) },
      history: layers.map((_, i) => ({ created_by: `step ${i}` })),
      ...extra,
    }),
  );
}

const layerA = () => tarOf([{ name: 'a', type: 'directory' }, { name: 'a/one', body: 'one\n' }]);
const layerB = () => tarOf([{ name: 'a/two', body: 'two\n' }, { name: 'a/.wh.one' }]);

/** An archive in Docker 20.10's layout: <id>/layer.tar and <hex>.json. */
async function classicArchive(name: string, images: Array<{ layers: Buffer[]; tags: string[]; rawLayers?: Buffer[] }>): Promise<string> {
  const entries: Parameters<typeof tarOf>[0] = [];
  const manifest = [];
  for (const image of images) {
    const config = configFor(image.layers);
    const configName = `${digestHex(sha256Digest(config))}.json`;
    entries.push({ name: configName, body: config });
    const layerPaths = [];
    for (const [i, layer] of image.layers.entries()) {
      const stored = image.rawLayers?.[i] ?? layer;
      const id = digestHex(sha256Digest(`${configName}${i}`));
      entries.push({ name: id, type: 'directory' }, { name: `${id}/VERSION`, body: '1.0' }, { name: `${id}/layer.tar`, body: stored });
      layerPaths.push(`${id}/layer.tar`);
    }
    manifest.push({ Config: configName, RepoTags: image.tags, Layers: layerPaths });
  }
  entries.push({ name: 'manifest.json', body: JSON.stringify(manifest) });
  const path = join(dir, name);
  await writeFile(path, await tarOf(entries));
  return path;
}

/** An archive in Docker 25+'s layout: an OCI layout inside, gzip layers, legacy paths as symlinks. */
async function newerArchive(name: string, layers: Buffer[]): Promise<{ path: string; gz: Buffer[] }> {
  const config = configFor(layers);
  const gz = layers.map((l) => gzipSync(l));
  const entries: Parameters<typeof tarOf>[0] = [{ name: 'blobs', type: 'directory' }, { name: 'blobs/sha256', type: 'directory' }];
  entries.push({ name: `blobs/sha256/${digestHex(sha256Digest(config))}`, body: config });
  const layerPaths = [];
  for (const g of gz) {
    const hex = digestHex(sha256Digest(g));
    entries.push({ name: `blobs/sha256/${hex}`, body: g });
    entries.push({ name: hex, type: 'directory' }, { name: `${hex}/layer.tar`, type: 'symlink', linkname: `../blobs/sha256/${hex}` });
    layerPaths.push(`${hex}/layer.tar`);
  }
  entries.push({ name: 'index.json', body: '{"schemaVersion":2,"manifests":[]}' }, { name: 'oci-layout', body: '{"imageLayoutVersion":"1.0.0"}' });
  entries.push({ name: 'manifest.json', body: JSON.stringify([{ Config: `blobs/sha256/${digestHex(sha256Digest(config))}`, RepoTags: ['new:1'], Layers: layerPaths }]) });
  const path = join(dir, name);
  await writeFile(path, await tarOf(entries));
  return { path, gz };
}

function isError(kind: BuildfleetError['kind'], pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BuildfleetError, String(err));
    assert.equal(err.kind, kind, err.message);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  };
}

test('reads a classic (Docker 20.10) archive: deterministic manifest, layer digests = diff_ids, verified blobs', async () => {
  const layers = [await layerA(), await layerB()];
  const path = await classicArchive('classic.tar', [{ layers, tags: ['busybox:latest'] }]);
  const src = await openArchiveSource(archiveRef(path));
  try {
    const image = await src.resolve();
    assert.equal(image.manifestMediaType, MediaType.dockerManifest);
    assert.equal(image.manifest.config.mediaType, MediaType.dockerConfig);
    assert.deepEqual(
      image.manifest.layers.map((l) => [l.mediaType, l.digest, l.size]),
      layers.map((l) => [MediaType.dockerLayer, sha256Digest(l), l.length]),
    );
    assert.deepEqual(image.config.rootfs.diff_ids, layers.map((l) => sha256Digest(l)));
    assert.equal(image.manifestDigest, sha256Digest(image.manifestBytes));
    assert.deepEqual(Object.keys(JSON.parse(image.manifestBytes.toString())), ['schemaVersion', 'mediaType', 'config', 'layers']);
    assert.deepEqual(await buffer(await src.openBlob(image.manifest.layers[1]!)), layers[1]);
    assert.deepEqual(await buffer(await src.openBlob(image.manifest.config)), image.configBytes);
    // Opening twice works (retries reopen).
    assert.deepEqual(await buffer(await src.openBlob(image.manifest.layers[1]!)), layers[1]);
    await assert.rejects(src.openBlob({ mediaType: MediaType.dockerLayer, digest: sha256Digest('x'), size: 1 }), isError('not-found', /no blob/));

    const again = await openArchiveSource(archiveRef(path, 'docker.io/library/busybox'));
    assert.equal((await again.resolve()).manifestDigest, image.manifestDigest, 'same archive, same manifest bytes');
    await again.close();
  } finally {
    await src.close();
  }
});

test('reads a Docker 25+ archive: OCI layout inside, gzip layers behind symlinks', async () => {
  const layers = [await layerA(), await layerB()];
  const { path, gz } = await newerArchive('newer.tar', layers);
  const src = await openArchiveSource(archiveRef(path, 'new', '1'));
  try {
    const image = await src.resolve();
    assert.deepEqual(
      image.manifest.layers.map((l) => [l.mediaType, l.digest, l.size]),
      gz.map((g) => [MediaType.dockerLayerGzip, sha256Digest(g), g.length]),
    );
    assert.deepEqual(await buffer(await src.openBlob(image.manifest.layers[0]!)), gz[0]);
  } finally {
    await src.close();
  }
});

test('a gzip layer stored under a non-content-addressed path is hashed for its digest', async () => {
  const layers = [await layerA()];
  const gz = gzipSync(layers[0]!);
  const path = await classicArchive('classic-gz.tar', [{ layers, tags: [], rawLayers: [gz] }]);
  const src = await openArchiveSource(archiveRef(path));
  try {
    const [layer] = (await src.resolve()).manifest.layers;
    assert.deepEqual([layer!.mediaType, layer!.digest, layer!.size], [MediaType.dockerLayerGzip, sha256Digest(gz), gz.length]);
  } finally {
    await src.close();
  }
});

test('selects an image of a multi-image archive by name, with Docker normalisation; says which exist', async () => {
  const path = await classicArchive('multi.tar', [
    { layers: [await layerA()], tags: ['busybox:latest'] },
    { layers: [await layerA(), await layerB()], tags: ['localhost:5000/team/app:2', 'app:2'] },
  ]);
  const pick = async (name?: string, tag?: string) => {
    const src = await openArchiveSource(archiveRef(path, name, tag));
    const layers = (await src.resolve()).manifest.layers.length;
    await src.close();
    return layers;
  };
  assert.equal(await pick('docker.io/library/busybox', 'latest'), 1);
  assert.equal(await pick('busybox'), 1);
  assert.equal(await pick('localhost:5000/team/app', '2'), 2);
  assert.equal(await pick('docker.io/library/app', '2'), 2);
  await assert.rejects(pick(), isError('usage', /holds 2 images; name one .*busybox:latest.*localhost:5000\/team\/app:2, app:2/));
  await assert.rejects(pick('app', '3'), isError('not-found', /has no image app:3 \(it has: busybox:latest; /));
});

test('malformed archives fail with one clear format error', async () => {
  const layers = [await layerA(), await layerB()];
  const good = await readFile(await classicArchive('good.tar', [{ layers, tags: ['x:1'] }]));

  const truncatedPath = join(dir, 'truncated.tar');
  await writeFile(truncatedPath, good.subarray(0, good.length - 3000));
  await assert.rejects(openArchiveSource(archiveRef(truncatedPath)), isError('format', /truncated\.tar: truncated tar archive/));

  const noManifest = join(dir, 'nomanifest.tar');
  await writeFile(noManifest, await tarOf([{ name: 'index.json', body: '{}' }]));
  await assert.rejects(openArchiveSource(archiveRef(noManifest)), isError('format', /no manifest\.json in the archive.*OCI archive/));

  const config = configFor(layers);
  const missingLayer = join(dir, 'missing-layer.tar');
  await writeFile(missingLayer, await tarOf([
    { name: 'c.json', body: config },
    { name: 'l1/layer.tar', body: layers[0]! },
    { name: 'manifest.json', body: JSON.stringify([{ Config: 'c.json', RepoTags: null, Layers: ['l1/layer.tar', 'l2/layer.tar'] }]) },
  ]));
  await assert.rejects(openArchiveSource(archiveRef(missingLayer)), isError('format', /layer l2\/layer\.tar named in manifest\.json is not in the archive/));

  const countMismatch = join(dir, 'count.tar');
  await writeFile(countMismatch, await tarOf([
    { name: 'c.json', body: config },
    { name: 'l1/layer.tar', body: layers[0]! },
    { name: 'manifest.json', body: JSON.stringify([{ Config: 'c.json', RepoTags: null, Layers: ['l1/layer.tar'] }]) },
  ]));
  await assert.rejects(openArchiveSource(archiveRef(countMismatch)), isError('format', /lists 1 layers but the image config has 2 diff_ids/));

  const badJson = join(dir, 'badjson.tar');
  await writeFile(badJson, await tarOf([{ name: 'manifest.json', body: '[{' }]));
  await assert.rejects(openArchiveSource(archiveRef(badJson)), isError('format', /manifest\.json is not valid JSON/));
});

test('a corrupt layer fails the blob read with an integrity error, and a copy leaves nothing at the destination', async () => {
  const layers = [await layerA(), await layerB()];
  const path = await classicArchive('corrupt.tar', [{ layers, tags: ['x:1'] }]);
  const bytes = await readFile(path);
  const at = bytes.indexOf(Buffer.from('two\n'));
  assert.ok(at > 0);
  bytes[at] = 'T'.charCodeAt(0);
  await writeFile(path, bytes);

  const src = await openArchiveSource(archiveRef(path));
  const staging = await mkdtemp(join(dir, 'staging-'));
  const target = join(dir, 'out', 'copy.tar');
  try {
    const image = await src.resolve();
    await assert.rejects(buffer(await src.openBlob(image.manifest.layers[1]!)), isError('integrity', /layer 2 \(.*\/layer\.tar\): content digest .* does not match/));
    const dst = await openArchiveDestination(archiveRef(target, 'x', '1'), { tmpDir: staging });
    await assert.rejects(copyBlobsAndManifest(src, dst), isError('integrity', /layer 2/));
    assert.equal(existsSync(target), false);
    assert.deepEqual(await readdir(staging), [], 'staging removed');
    assert.deepEqual(existsSync(join(dir, 'out')) ? await readdir(join(dir, 'out')) : [], [], 'no temp file beside the target');
  } finally {
    await src.close();
  }
});

test('the archive destination writes an archive its reader reads back, replacing an existing file', async () => {
  const layers = [await layerA(), await layerB()];
  const { path: srcPath, gz } = await newerArchive('dst-src.tar', layers);
  const target = join(dir, 'written.tar');
  await writeFile(target, 'an old file');
  const staging = await mkdtemp(join(dir, 'staging-'));
  const src = await openArchiveSource(archiveRef(srcPath));
  const dst = await openArchiveDestination(archiveRef(target, 'example.com/team/img', 'v1'), { tmpDir: staging });
  assert.deepEqual(dst.preferences, { manifestFormat: 'docker', layerCompression: 'none' });
  try {
    const image = await src.resolve();
    // putManifest refuses a manifest whose blobs were not put.
    await assert.rejects(dst.putManifest(image.manifestBytes, image.manifestMediaType), isError('format', /names blobs that were not stored/));
    await copyBlobsAndManifest(src, dst);
  } finally {
    await src.close();
  }
  assert.deepEqual(await readdir(staging), []);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.written')), [], 'no temp file left');

  const back = await openArchiveSource(archiveRef(target, 'example.com/team/img', 'v1'));
  try {
    const image = await back.resolve();
    assert.deepEqual(image.manifest.layers.map((l) => l.digest), gz.map((g) => sha256Digest(g)));
    assert.deepEqual(await buffer(await back.openBlob(image.manifest.layers[1]!)), gz[1]);
  } finally {
    await back.close();
  }
  const tarBytes = await readFile(target);
  const manifestAt = tarBytes.indexOf(Buffer.from('[{"Config":"blobs/sha256/'));
  const manifest = JSON.parse(tarBytes.subarray(manifestAt, tarBytes.indexOf(0x0a, manifestAt)).toString());
  assert.deepEqual(manifest[0].RepoTags, ['example.com/team/img:v1']);
});

test('putBlob without a digest computes it; a wrong digest is rejected and not kept; abort leaves nothing', async () => {
  const staging = await mkdtemp(join(dir, 'staging-'));
  const target = join(dir, 'aborted.tar');
  const dst = await openArchiveDestination(archiveRef(target), { tmpDir: staging });
  const layer = await layerA();
  const stored = await dst.putBlob(async () => Readable.from([layer]), { mediaType: MediaType.dockerLayer });
  assert.deepEqual(stored, { mediaType: MediaType.dockerLayer, digest: sha256Digest(layer), size: layer.length });
  assert.equal(await dst.hasBlob(stored), true);
  await assert.rejects(
    dst.putBlob(async () => Readable.from([layer]), { mediaType: MediaType.dockerLayer, digest: sha256Digest('other') }),
    isError('integrity', /does not match/),
  );
  assert.equal(await dst.hasBlob({ ...stored, digest: sha256Digest('other') }), false);
  await dst.abort();
  await dst.abort();
  assert.deepEqual(await readdir(staging), []);
  assert.equal(existsSync(target), false);
});

test('writeDockerArchive computes missing digests and writes each blob once', async () => {
  const layer = await layerA();
  const layerPath = join(dir, 'l.tar');
  const configPath = join(dir, 'c.json');
  await writeFile(layerPath, layer);
  await writeFile(configPath, configFor([layer, layer]));
  const out = join(dir, 'direct.tar');
  await writeDockerArchive(createWriteStream(out), { configPath, layerPaths: [layerPath, layerPath], repoTags: [] });
  const src = await openArchiveSource(archiveRef(out));
  try {
    const image = await src.resolve();
    assert.deepEqual(image.manifest.layers.map((l) => l.digest), [sha256Digest(layer), sha256Digest(layer)]);
  } finally {
    await src.close();
  }
  const count = (await readFile(out)).toString('latin1').split(`blobs/sha256/${digestHex(sha256Digest(layer))}\0`).length - 1;
  assert.equal(count, 1, 'one member for the repeated layer');
});

test('a destination path that cannot become the archive fails on open, before anything is read', async () => {
  const isUsage = (pattern: RegExp) => (err: unknown) => err instanceof BuildfleetError && err.kind === 'usage' && pattern.test(err.message) && !err.message.includes('\n');
  await assert.rejects(openArchiveDestination(archiveRef(dir)), isUsage(new RegExp(`^docker-archive:${dir}: ${dir} is a directory; name the archive file to write`)));
  const file = join(dir, 'plain-file');
  await writeFile(file, 'x');
  await assert.rejects(openArchiveDestination(archiveRef(join(file, 'sub', 'out.tar'))), isUsage(new RegExp(`${file} is not a directory$`)));
  // A new file in a directory still to be made is fine.
  const fine = await openArchiveDestination(archiveRef(join(dir, 'new-dir', 'out.tar')));
  await fine.abort();
});
