import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, mkdir, readFile, readdir, rm, stat, writeFile, lstat } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import tar from 'tar-stream';
import { sha256Digest } from '../oci/digest.js';
import { BuildfleetError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import type { Descriptor, Manifest, Platform } from '../oci/schemas.js';
import type { OciLayoutReference } from '../oci/reference.js';
import { openOciLayoutDestination, openOciLayoutSource, removeOciLayoutLeftovers, REF_NAME_ANNOTATION } from './oci-layout.js';
import type { ImageDestination } from './types.js';
import { ownedTempName } from './temp-files.js';
import { amd64Arm64Index } from '../../test/helpers/transports.js';

const root = await mkdtemp(join(tmpdir(), 'bf-oci-layout-'));
after(() => rm(root, { recursive: true, force: true }));
let counter = 0;
const freshDir = () => join(root, `layout-${++counter}`);
const ref = (path: string, tag?: string): OciLayoutReference => (tag === undefined ? { transport: 'oci', path } : { transport: 'oci', path, tag });

// ---------------------------------------------------------------------------------------------
// Small images made by hand

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name, mode: 0o644, mtime: new Date(0) }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

type TestImage = { manifest: Manifest; manifestBytes: Buffer; configBytes: Buffer; layers: Buffer[]; digest: string };

async function makeImage(marker: string, platform: Platform = { os: 'linux', architecture: 'amd64' }): Promise<TestImage> {
  const tars = [await tarOf({ 'etc/base.txt': `base ${marker}\n` }), await tarOf({ [`app/${marker}.txt`]: `app ${marker}\n` })];
  const layers = tars.map((t) => gzipSync(t));
  const configBytes = Buffer.from(
    JSON.stringify({
      ...platform,
      created: '2024-01-01T00:00:00Z',
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'], Labels: { marker } },
      rootfs: { type: 'layers', diff_ids: tars.map((t) => sha256Digest(t)) },
      history: tars.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `layer ${i}` })),
    }),
  );
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256Digest(configBytes), size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: MediaType.ociLayerGzip, digest: sha256Digest(l), size: l.length })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  return { manifest, manifestBytes, configBytes, layers, digest: sha256Digest(manifestBytes) };
}

const bytesOf = (data: Buffer) => async () => Readable.from([data]);

/** Puts the config with its digest, layer 0 with its digest, layer 1 without (as a recompressing copy does). */
async function putImage(dest: ImageDestination, image: TestImage): Promise<void> {
  const config = await dest.putBlob(bytesOf(image.configBytes), { mediaType: MediaType.ociConfig, digest: image.manifest.config.digest, size: image.configBytes.length });
  assert.equal(config.digest, image.manifest.config.digest);
  const [l0, l1] = image.layers as [Buffer, Buffer];
  await dest.putBlob(bytesOf(l0), { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(l0), size: l0.length });
  const stored = await dest.putBlob(bytesOf(l1), { mediaType: MediaType.ociLayerGzip });
  assert.deepEqual(stored, { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(l1), size: l1.length });
  assert.equal(await dest.putManifest(image.manifestBytes, MediaType.ociManifest), image.digest);
}

async function writeImage(path: string, tag: string | undefined, image: TestImage): Promise<void> {
  const dest = await openOciLayoutDestination(ref(path, tag));
  await putImage(dest, image);
  await dest.commit();
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function indexJson(path: string): Promise<{ manifests: Descriptor[] } & Record<string, unknown>> {
  return JSON.parse(await readFile(join(path, 'index.json'), 'utf8'));
}

/** Every path under `dir` with its type, mode and content digest: "byte-identical" made comparable. */
async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const path = join(dir, rel, name);
      const info = await lstat(path);
      if (info.isDirectory()) {
        out.push(`d ${join(rel, name)} ${info.mode.toString(8)}`);
        await walk(join(rel, name));
      } else {
        out.push(`f ${join(rel, name)} ${info.mode.toString(8)} ${sha256Digest(await readFile(path))}`);
      }
    }
  };
  await walk('');
  return out;
}

function isKind(kind: string, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BuildfleetError, `expected a BuildfleetError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    assert.ok(!err.message.includes('\n'), 'one-line message');
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

// ---------------------------------------------------------------------------------------------

test('an image written through the destination reads back identically through the source', async () => {
  const dir = freshDir();
  const image = await makeImage('one');
  await writeImage(dir, 'v1', image);

  assert.deepEqual(JSON.parse(await readFile(join(dir, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
  const index = await indexJson(dir);
  assert.deepEqual(index.manifests, [
    { mediaType: MediaType.ociManifest, digest: image.digest, size: image.manifestBytes.length, annotations: { [REF_NAME_ANNOTATION]: 'v1' } },
  ]);

  const source = await openOciLayoutSource(ref(dir, 'v1'));
  const resolved = await source.resolve();
  assert.equal(resolved.manifestDigest, image.digest);
  assert.deepEqual(resolved.manifestBytes, image.manifestBytes);
  assert.equal(resolved.manifestMediaType, MediaType.ociManifest);
  assert.deepEqual(resolved.configBytes, image.configBytes);
  assert.equal(resolved.config.config?.Labels?.marker, 'one');
  assert.equal(resolved.index, undefined);
  for (const [i, layer] of resolved.manifest.layers.entries()) assert.deepEqual(await readAll(await source.openBlob(layer)), image.layers[i]);
  // Untagged reference: the only entry.
  assert.equal((await (await openOciLayoutSource(ref(dir))).resolve()).manifestDigest, image.digest);
  await source.close();

  const dest = await openOciLayoutDestination(ref(dir, 'v1'));
  const layer0 = image.manifest.layers[0]!;
  assert.equal(await dest.hasBlob(layer0), true);
  assert.equal(await dest.hasBlob({ ...layer0, size: layer0.size + 1 }), false);
  assert.equal(await dest.hasBlob({ ...layer0, digest: sha256Digest('absent') }), false);
  await dest.abort();
});

test('two tags in one layout; retagging replaces only that entry', async () => {
  const dir = freshDir();
  const [a, b, c] = [await makeImage('a'), await makeImage('b'), await makeImage('c')];
  await writeImage(dir, 'v1', a);
  await writeImage(dir, 'v2', b);
  const before = await indexJson(dir);
  assert.deepEqual(before.manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]), ['v1', 'v2']);

  await writeImage(dir, 'v1', c);
  const afterRetag = await indexJson(dir);
  assert.equal(afterRetag.manifests.length, 2);
  assert.equal(afterRetag.manifests[0]!.digest, c.digest);
  assert.deepEqual(afterRetag.manifests[1], before.manifests[1]);
  assert.equal((await (await openOciLayoutSource(ref(dir, 'v1'))).resolve()).manifestDigest, c.digest);
  assert.equal((await (await openOciLayoutSource(ref(dir, 'v2'))).resolve()).manifestDigest, b.digest);

  // An untagged write adds an entry without the annotation (once), keeping the others.
  await writeImage(dir, undefined, a);
  await writeImage(dir, undefined, a);
  const untagged = await indexJson(dir);
  assert.equal(untagged.manifests.length, 3);
  assert.equal(untagged.manifests[2]!.annotations, undefined);

  await assert.rejects((await openOciLayoutSource(ref(dir))).resolve(), isKind('usage', /v1, v2, untagged sha256:/));
  await assert.rejects((await openOciLayoutSource(ref(dir, 'nope'))).resolve(), isKind('not-found', /no image tagged "nope".*v1, v2/));
});

test('a nested index selects the requested platform and keeps the index', async () => {
  const dir = freshDir();
  const amd = await makeImage('amd', { os: 'linux', architecture: 'amd64' });
  const arm = await makeImage('arm', { os: 'linux', architecture: 'arm64', variant: 'v8' });
  const dest = await openOciLayoutDestination(ref(dir, 'multi'));
  await putImage(dest, amd);
  await putImage(dest, arm);
  const indexBytes = amd64Arm64Index({ digest: amd.digest, size: amd.manifestBytes.length }, { digest: arm.digest, size: arm.manifestBytes.length });
  const indexDigest = await dest.putManifest(indexBytes, MediaType.ociIndex);
  await dest.commit();
  assert.deepEqual((await indexJson(dir)).manifests.map((m) => [m.mediaType, m.digest]), [[MediaType.ociIndex, indexDigest]]);

  const source = await openOciLayoutSource(ref(dir, 'multi'));
  const onArm = await source.resolve({ platform: { os: 'linux', architecture: 'arm64' } });
  assert.equal(onArm.manifestDigest, arm.digest);
  assert.equal(onArm.config.architecture, 'arm64');
  assert.equal(onArm.index?.digest, indexDigest);
  assert.deepEqual(onArm.index?.bytes, indexBytes);
  assert.equal(onArm.index?.mediaType, MediaType.ociIndex);
  const onAmd = await source.resolve({ platform: { os: 'linux', architecture: 'amd64' } });
  assert.equal(onAmd.manifestDigest, amd.digest);
  assert.deepEqual(await readAll(await source.openBlob(onAmd.manifest.layers[1]!)), amd.layers[1]);
  await assert.rejects(source.resolve({ platform: { os: 'linux', architecture: 's390x' } }), isKind('not-found', /linux\/amd64, linux\/arm64\/v8/));
});

test('umoci and skopeo accept what we write, and we read what skopeo and umoci write', async () => {
  const dir = freshDir();
  const [a, b] = [await makeImage('a'), await makeImage('b')];
  await writeImage(dir, 'v1', a);
  await writeImage(dir, 'v2', b);

  const ls = await execa('umoci', ['ls', '--layout', dir]);
  assert.deepEqual(ls.stdout.split('\n').filter(Boolean).sort(), ['v1', 'v2']);

  const inspect = JSON.parse((await execa('skopeo', ['inspect', `oci:${dir}:v2`])).stdout);
  assert.equal(inspect.Digest, b.digest);
  assert.deepEqual(inspect.Layers, b.manifest.layers.map((l) => l.digest));
  assert.equal(inspect.Labels.marker, 'b');

  // skopeo verifies every blob digest while copying.
  const out = join(root, `skopeo-dir-${counter}`);
  await execa('skopeo', ['--insecure-policy', 'copy', '--quiet', `oci:${dir}:v1`, `dir:${out}`]);
  assert.deepEqual(await readFile(join(out, 'manifest.json')), a.manifestBytes);

  // The other way: a layout skopeo wrote (beside an image of ours), and an image umoci made.
  await execa('skopeo', ['--insecure-policy', 'copy', '--quiet', `oci:${dir}:v1`, `oci:${dir}:copied`]);
  const copied = await (await openOciLayoutSource(ref(dir, 'copied'))).resolve();
  assert.equal(copied.manifestDigest, a.digest);
  await execa('umoci', ['new', '--image', `${dir}:fromumoci`]);
  const fromUmoci = await (await openOciLayoutSource(ref(dir, 'fromumoci'))).resolve();
  assert.equal(fromUmoci.manifest.layers.length, 0);
  assert.equal((await (await openOciLayoutSource(ref(dir, 'v2'))).resolve()).manifestDigest, b.digest);
});

test('a layer blob missing (or cut short) in the layout fails resolve, naming it: the layout is incomplete', async () => {
  const dir = freshDir();
  const image = await makeImage('incomplete');
  await writeImage(dir, 'v1', image);
  const source = await openOciLayoutSource(ref(dir, 'v1'));
  const { manifest } = await source.resolve();
  const [first, second] = manifest.layers;
  const blobPath = (digest: string) => join(dir, 'blobs', 'sha256', digest.slice(7));
  await rm(blobPath(second!.digest));
  const count = manifest.layers.length;
  await assert.rejects(source.resolve(), isKind('integrity', new RegExp(`the layout is incomplete: layer 2 of ${count} \\(blob ${second!.digest}\\) is missing$`)));
  await writeFile(blobPath(first!.digest), 'short');
  await assert.rejects(source.resolve(), isKind('integrity', new RegExp(`layer 1 of ${count} \\(blob ${first!.digest}\\) has 5 bytes, its descriptor declares ${first!.size}; layer 2 of ${count} .* is missing$`)));
});

test('corrupt, missing and malformed content gives one-line errors of the right kind', async () => {
  const dir = freshDir();
  const image = await makeImage('corrupt');
  await writeImage(dir, 'v1', image);
  const source = await openOciLayoutSource(ref(dir, 'v1'));
  const { manifest } = await source.resolve();

  const layer = manifest.layers[1]!;
  const layerPath = join(dir, 'blobs', 'sha256', layer.digest.slice(7));
  const bytes = await readFile(layerPath);
  bytes[bytes.length - 5]! ^= 0xff;
  await writeFile(layerPath, bytes);
  await assert.rejects(readAll(await source.openBlob(layer)), isKind('integrity', /does not match/));

  const configPath = join(dir, 'blobs', 'sha256', manifest.config.digest.slice(7));
  const config = await readFile(configPath);
  config[config.length - 2]! ^= 0x01;
  await writeFile(configPath, config);
  await assert.rejects(source.resolve(), isKind('integrity', /config/));
  await rm(configPath);
  await assert.rejects(source.resolve(), isKind('integrity', /missing from the layout \(the layout is incomplete\)/));
  await assert.rejects(source.openBlob({ ...layer, digest: sha256Digest('nothing') }), isKind('integrity', /missing from the layout \(the layout is incomplete\)/));

  await assert.rejects(openOciLayoutSource(ref(join(root, 'does-not-exist'), 'x')), isKind('not-found', /no such directory/));
  const notLayout = freshDir();
  await mkdir(notLayout);
  await writeFile(join(notLayout, 'something'), 'x');
  await assert.rejects(openOciLayoutSource(ref(notLayout)), isKind('format', /not an OCI image layout/));
  await assert.rejects(openOciLayoutDestination(ref(notLayout, 'x')), isKind('format', /not empty and is not an OCI image layout/));
  assert.deepEqual(await readdir(notLayout), ['something']);
  // Another writer opening the same new layout: its marker's temp file does not make the directory foreign.
  const opening = freshDir();
  await mkdir(opening);
  await writeFile(join(opening, ownedTempName('.oci-layout.tmp-')), '{"imageLayoutVersion":"1.0.0"}');
  const beside = await openOciLayoutDestination(ref(opening, 'x'));
  await beside.abort();
  // A file merely named like one is foreign.
  const lookalike = freshDir();
  await mkdir(lookalike);
  await writeFile(join(lookalike, '.oci-layout.tmp-not-ours'), 'x');
  await assert.rejects(openOciLayoutDestination(ref(lookalike, 'x')), isKind('format', /not empty and is not an OCI image layout/));
});

test('putManifest naming a missing blob fails and index.json stays as it was', async () => {
  const dir = freshDir();
  await writeImage(dir, 'v1', await makeImage('keep'));
  const before = await snapshot(dir);
  const indexBefore = await readFile(join(dir, 'index.json'));

  const image = await makeImage('broken');
  const dest = await openOciLayoutDestination(ref(dir, 'v1'));
  await dest.putBlob(bytesOf(image.configBytes), { mediaType: MediaType.ociConfig, digest: image.manifest.config.digest });
  await dest.putBlob(bytesOf(image.layers[0]!), { mediaType: MediaType.ociLayerGzip, digest: image.manifest.layers[0]!.digest });
  await assert.rejects(dest.putManifest(image.manifestBytes, MediaType.ociManifest), isKind('not-found', /1 blob\(s\) not in the layout/));
  await assert.rejects(stat(join(dir, 'blobs', 'sha256', image.digest.slice(7))), { code: 'ENOENT' });
  await assert.rejects(dest.commit(), isKind('usage'));
  assert.deepEqual(await readFile(join(dir, 'index.json')), indexBefore);
  await assert.rejects(dest.putManifest(image.manifestBytes, MediaType.dockerManifest), isKind('unsupported'));
  // A blob whose bytes do not match its digest is refused and not kept.
  await assert.rejects(
    dest.putBlob(bytesOf(Buffer.from('tampered')), { mediaType: MediaType.ociLayerGzip, digest: image.manifest.layers[1]!.digest }),
    isKind('integrity'),
  );
  await dest.abort();
  assert.deepEqual(await snapshot(dir), before);
});

test('abort leaves the layout byte-identical, also with a blob still streaming', async () => {
  const dir = freshDir();
  const kept = await makeImage('kept');
  await writeImage(dir, 'v1', kept);
  const before = await snapshot(dir);

  const image = await makeImage('aborted');
  const dest = await openOciLayoutDestination(ref(dir, 'v1'));
  // A blob already there (shared with the kept image) must survive the abort.
  await dest.putBlob(bytesOf(kept.configBytes), { mediaType: MediaType.ociConfig, digest: kept.manifest.config.digest });
  await putImage(dest, image);
  const endless = new Readable({ read() { this.push(Buffer.alloc(4096, 1)); } });
  const streaming = dest.putBlob(async () => endless, { mediaType: MediaType.ociLayerGzip }).then(
    () => undefined,
    (err: unknown) => err,
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.ok((await readdir(join(dir, 'blobs', 'sha256'))).some((name) => name.includes('.tmp-')));
  await dest.abort();
  assert.ok((await streaming) instanceof Error, 'the streaming putBlob fails');
  await dest.abort(); // twice is fine
  assert.deepEqual(await snapshot(dir), before);
  await assert.rejects(dest.putBlob(bytesOf(Buffer.from('x')), { mediaType: 'x' }), isKind('usage'));

  // A layout the destination created disappears entirely.
  const fresh = freshDir();
  const created = await openOciLayoutDestination(ref(fresh, 'v1'));
  await putImage(created, image);
  await created.abort();
  await assert.rejects(stat(fresh), { code: 'ENOENT' });
  // An empty directory is left empty.
  const empty = freshDir();
  await mkdir(empty);
  const inEmpty = await openOciLayoutDestination(ref(empty, 'v1'));
  await putImage(inEmpty, image);
  await inEmpty.abort();
  assert.deepEqual(await readdir(empty), []);
});

test('concurrent writers keep each other\'s entries; a held lock gives a clear error, a dead one is taken over', async () => {
  const dir = freshDir();
  const images = await Promise.all(['w1', 'w2', 'w3', 'w4'].map((m) => makeImage(m)));
  await Promise.all(images.map((image, i) => writeImage(dir, `t${i}`, image)));
  const index = await indexJson(dir);
  assert.deepEqual(index.manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).sort(), ['t0', 't1', 't2', 't3']);
  for (const [i, image] of images.entries()) assert.equal((await (await openOciLayoutSource(ref(dir, `t${i}`))).resolve()).manifestDigest, image.digest);

  const lock = join(dir, 'index.json.lock');
  await writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), nonce: 'live', created: '2024-01-01T00:00:00Z' }));
  const blocked = await openOciLayoutDestination(ref(dir, 'blocked'), { lockTimeoutMs: 150 });
  await putImage(blocked, images[0]!);
  await assert.rejects(blocked.commit(), isKind('environment', /locked by pid \d+ .*index\.json\.lock/));
  await rm(lock);
  await blocked.commit();
  assert.equal((await indexJson(dir)).manifests.length, 5);
});

test('a killed writer leaves temp files the source ignores, and a stale lock a later commit takes over', { timeout: 15_000 }, async () => {
  const dir = freshDir();
  const image = await makeImage('survivor');
  await writeImage(dir, 'v1', image);

  const module = fileURLToPath(new URL('./oci-layout.ts', import.meta.url));
  const script = `
    import { Readable } from 'node:stream';
    const { openOciLayoutDestination } = await import(${JSON.stringify(module)});
    const dest = await openOciLayoutDestination({ transport: 'oci', path: ${JSON.stringify(dir)}, tag: 'v1' });
    let sent = 0;
    const endless = new Readable({ read() { sent += 1; this.push(Buffer.alloc(65536, 7)); if (sent === 4) console.log('writing'); } });
    dest.putBlob(async () => endless, { mediaType: 'application/octet-stream' });
    dest.putBlob(async () => new Readable({ read() { this.push(Buffer.alloc(1024)); } }), { mediaType: 'x', digest: 'sha256:${'0'.repeat(64)}' });
    setInterval(() => {}, 1000);
  `;
  const child = execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: fileURLToPath(new URL('../..', import.meta.url)), reject: false });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (data: Buffer) => data.toString().includes('writing') && resolve());
    child.on('exit', () => reject(new Error('writer exited early')));
  });
  await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGKILL');
  await child;
  const temps = (await readdir(join(dir, 'blobs', 'sha256'))).filter((name) => name.startsWith('.'));
  assert.ok(temps.length >= 1, 'the killed writer left temp files');

  const source = await openOciLayoutSource(ref(dir, 'v1'));
  const resolved = await source.resolve();
  assert.equal(resolved.manifestDigest, image.digest);
  for (const [i, layer] of resolved.manifest.layers.entries()) assert.deepEqual(await readAll(await source.openBlob(layer)), image.layers[i]);
  assert.deepEqual((await execa('umoci', ['ls', '--layout', dir])).stdout.trim(), 'v1');

  // The dead writer's lock does not block the next commit, and that writer sweeps its temp files.
  const deadLock = JSON.stringify({ pid: child.pid, host: hostname(), nonce: 'dead' });
  await writeFile(join(dir, 'index.json.lock'), deadLock);
  const next = await makeImage('next');
  await writeImage(dir, 'v2', next);
  assert.equal((await (await openOciLayoutSource(ref(dir, 'v2'))).resolve()).manifestDigest, next.digest);
  assert.deepEqual((await readdir(join(dir, 'blobs', 'sha256'))).filter((name) => name.startsWith('.')), []);

  // Without a writer coming by, removeOciLayoutLeftovers clears both.
  const leftTemp = join(dir, 'blobs', 'sha256', ownedTempName(`.${'b'.repeat(64)}.tmp-`, child.pid));
  await writeFile(leftTemp, 'partial');
  await writeFile(join(dir, 'index.json.lock'), deadLock);
  assert.deepEqual((await removeOciLayoutLeftovers(dir)).sort(), [leftTemp, join(dir, 'index.json.lock')].sort());
  assert.deepEqual((await readdir(join(dir, 'blobs', 'sha256'))).filter((name) => name.startsWith('.')), []);
  assert.deepEqual((await readdir(dir)).sort(), ['blobs', 'index.json', 'oci-layout']);
});

test('blobs are content addressed: the same digest of another algorithm is verified too', async () => {
  const dir = freshDir();
  const dest = await openOciLayoutDestination(ref(dir, 'x'));
  const data = Buffer.from('sha512 content');
  const digest = 'sha512:' + createHash('sha512').update(data).digest('hex');
  const stored = await dest.putBlob(bytesOf(data), { mediaType: 'application/octet-stream', digest, size: data.length });
  assert.deepEqual(stored, { mediaType: 'application/octet-stream', digest, size: data.length });
  assert.deepEqual(await readFile(join(dir, 'blobs', 'sha512', digest.slice(7))), data);
  await assert.rejects(
    dest.putBlob(bytesOf(Buffer.from('other')), { mediaType: 'application/octet-stream', digest: 'sha512:' + 'a'.repeat(128) }),
    isKind('integrity'),
  );
  await dest.abort();
  await assert.rejects(stat(dir), { code: 'ENOENT' });
});
