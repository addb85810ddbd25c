import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import Dockerode from 'dockerode';
import tar from 'tar-stream';
import { DockerEngine, importBusyboxBase } from '../../daemons/index.js';
import { BuildfleetError } from '../errors.js';
import { MediaType } from '../oci/media-types.js';
import { sha256Digest } from '../oci/digest.js';
import type { DaemonReference } from '../oci/reference.js';
import { openArchiveDestination, openArchiveSource, writeDockerArchive } from './docker-archive.js';
import { dockerEndpoint, dockerFromEnvironment, openDaemonDestination, openDaemonSource } from './docker-daemon.js';
import { archiveRef, copyBlobsAndManifest } from '../../test/helpers/transports.js';

// Needs root and Debian's docker.io and busybox-static (.ci/run installs them). One engine for the file.
let engine: DockerEngine;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'buildfleet-daemon-test-'));
  engine = await DockerEngine.start();
  await importBusyboxBase(engine.docker, 'base:1');
}, { timeout: 60_000 });

after(async () => {
  await engine?.stop();
  await rm(dir, { recursive: true, force: true });
}, { timeout: 60_000 });

const daemonRef = (name: string, tag?: string): DaemonReference => ({ transport: 'docker-daemon', name, ...(tag !== undefined && { tag }) });
type Inspect = { Id: string; RepoTags: string[]; RootFS: { Layers: string[] }; Config: { Env: string[]; Cmd: string[]; WorkingDir: string; Labels: Record<string, string> } };
const inspect = async (name: string) => (await engine.docker.getImage(name).inspect()) as unknown as Inspect;

const dockerfile = `FROM base:1
RUN mkdir -p /data && echo one > /data/one && echo doomed > /data/gone && echo keep > /data/keep
RUN rm /data/gone && ln -s /data/one /data/link && echo two > /data/two
ENV GREETING=hello
WORKDIR /data
LABEL org.example.test=yes
RUN echo three > three && chmod 640 three
CMD ["sh", "-c", "echo $GREETING; ls; cat link; pwd; stat -c %a three; test -e gone || echo gone-is-gone"]
`;
const expectedRun = ['hello', 'keep', 'link', 'one', 'three', 'two', 'one', '/data', '640', 'gone-is-gone'];
const runLines = async (image: string) => (await engine.cli(['run', '--rm', '--network', 'none', image])).stdout.trim().split('\n');

test('daemon image -> daemon source -> archive destination -> docker load: files and config survive', { timeout: 90_000 }, async () => {
  const context = join(dir, 'ctx');
  await mkdir(context, { recursive: true });
  await writeFile(join(context, 'Dockerfile'), dockerfile);
  await engine.cli(['build', '--network', 'none', '-t', 'x:1', context]);
  const before = await inspect('x:1');
  assert.ok(before.RootFS.Layers.length >= 4, `4 layers at least, got ${before.RootFS.Layers.length}`);
  assert.deepEqual(await runLines('x:1'), expectedRun);

  const src = await openDaemonSource(daemonRef('x', '1'), { docker: engine.docker, tmpDir: dir });
  const target = join(dir, 'x.tar');
  let manifestDigest: string;
  try {
    const image = await src.resolve();
    assert.deepEqual(image.config.rootfs.diff_ids, before.RootFS.Layers);
    assert.equal(sha256Digest(image.configBytes), before.Id, 'config bytes are the image id');
    assert.deepEqual(image.config.config?.Env, before.Config.Env);
    assert.deepEqual(image.config.config?.Cmd, before.Config.Cmd);
    assert.equal(image.config.config?.WorkingDir, '/data');
    assert.deepEqual(image.config.config?.Labels, { 'org.example.test': 'yes' });
    assert.ok(image.manifest.layers.every((l) => l.mediaType === MediaType.dockerLayer));
    manifestDigest = image.manifestDigest;
    const dst = await openArchiveDestination(archiveRef(target, 'x', '1'), { tmpDir: dir });
    await copyBlobsAndManifest(src, dst);
  } finally {
    await src.close();
  }
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('buildfleet-')), [], 'spool and staging removed');

  // Our reader reads what we wrote, to the same manifest.
  const back = await openArchiveSource(archiveRef(target));
  assert.equal((await back.resolve()).manifestDigest, manifestDigest);
  await back.close();

  await engine.cli(['rmi', 'x:1']);
  await assert.rejects(inspect('x:1'));
  const loaded = await engine.cli(['load', '-i', target]);
  assert.match(loaded.stdout, /Loaded image: x:1/);
  const after = await inspect('x:1');
  assert.equal(after.Id, before.Id, 'same config, same image id');
  assert.deepEqual(after.RootFS.Layers, before.RootFS.Layers);
  assert.deepEqual(await runLines('x:1'), expectedRun);

  // The archive written by `docker save` itself, several images in it.
  const saved = join(dir, 'saved.tar');
  await engine.cli(['save', '-o', saved, 'x:1', 'base:1']);
  await assert.rejects(openArchiveSource(archiveRef(saved)), /holds 2 images; name one/);
  const cut = join(dir, 'cut.tar');
  const savedBytes = await readFile(saved);
  await writeFile(cut, savedBytes.subarray(0, savedBytes.length - 100_000));
  await assert.rejects(openArchiveSource(archiveRef(cut, 'x', '1')), (err: unknown) =>
    err instanceof BuildfleetError && err.kind === 'format' && err.message.startsWith(`${cut}: truncated tar archive`));
  const fromSave = await openArchiveSource(archiveRef(saved, 'docker.io/library/x', '1'));
  try {
    const image = await fromSave.resolve();
    assert.equal(image.manifestDigest, manifestDigest, 'docker save and our archive give the same manifest');
    for (const layer of image.manifest.layers) {
      const bytes = await buffer(await fromSave.openBlob(layer));
      assert.equal(sha256Digest(bytes), layer.digest);
    }
  } finally {
    await fromSave.close();
  }

  // And back into the daemon through the daemon destination, under a new name.
  const again = await openArchiveSource(archiveRef(target));
  await copyBlobsAndManifest(again, await openDaemonDestination(daemonRef('y', 'copy'), { docker: engine.docker, tmpDir: dir }));
  await again.close();
  assert.equal((await inspect('y:copy')).Id, before.Id);
  assert.deepEqual(await runLines('y:copy'), expectedRun);
});

/** A layer no daemon has seen: random content, so docker load has to unpack it. */
async function uniqueLayer(): Promise<{ tar: Buffer; token: string }> {
  const token = randomBytes(8).toString('hex');
  const pack = tar.pack();
  pack.entry({ name: 'fresh', type: 'directory', mtime: new Date(0) });
  pack.entry({ name: 'fresh/token', mtime: new Date(0) }, `${token}\n`);
  pack.finalize();
  return { tar: await buffer(pack as unknown as AsyncIterable<Buffer>), token };
}

test('gzip layers go through the daemon destination: Docker 20.10 docker load inflates them itself', { timeout: 60_000 }, async () => {
  const base = await openDaemonSource(daemonRef('base', '1'), { docker: engine.docker, tmpDir: dir });
  let baseLayer: Buffer;
  let baseConfig: Record<string, any>;
  try {
    const image = await base.resolve();
    baseLayer = await buffer(await base.openBlob(image.manifest.layers[0]!));
    baseConfig = JSON.parse(image.configBytes.toString());
  } finally {
    await base.close();
  }
  const { tar: fresh, token } = await uniqueLayer();
  const config = {
    ...baseConfig,
    config: { ...baseConfig.config, Cmd: ['cat', '/fresh/token'] },
    rootfs: { type: 'layers', diff_ids: [sha256Digest(baseLayer), sha256Digest(fresh)] },
    history: [{ created_by: 'base' }, { created_by: 'fresh' }],
  };
  const files = { config: join(dir, 'gz-config.json'), base: join(dir, 'base.tar.gz'), fresh: join(dir, 'fresh.tar.gz') };
  await writeFile(files.config, JSON.stringify(config));
  await writeFile(files.base, gzipSync(baseLayer));
  await writeFile(files.fresh, gzipSync(fresh));
  const handMade = join(dir, 'gz.tar');
  await writeDockerArchive(createWriteStream(handMade), { configPath: files.config, layerPaths: [files.base, files.fresh], repoTags: [] });

  const src = await openArchiveSource(archiveRef(handMade));
  try {
    const image = await src.resolve();
    assert.deepEqual(image.manifest.layers.map((l) => l.mediaType), [MediaType.dockerLayerGzip, MediaType.dockerLayerGzip]);
    const dst = await openDaemonDestination(daemonRef('gz', '1'), { docker: engine.docker, tmpDir: dir });
    assert.deepEqual(dst.preferences, { manifestFormat: 'docker', layerCompression: 'keep' });
    await copyBlobsAndManifest(src, dst); // commit() checks RootFS.Layers against the diff_ids
  } finally {
    await src.close();
  }
  assert.deepEqual((await inspect('gz:1')).RootFS.Layers, config.rootfs.diff_ids);
  assert.deepEqual(await runLines('gz:1'), [token]);

  // zstd: Docker 20.10's docker load fails on it ("invalid tar header"), so the destination refuses first.
  const zstdManifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.dockerManifest,
    config: { mediaType: MediaType.dockerConfig, digest: sha256Digest(await readFile(files.config)), size: (await readFile(files.config)).length },
    layers: [{ mediaType: MediaType.dockerLayerZstd, digest: sha256Digest('z'), size: 1 }, { mediaType: MediaType.dockerLayerZstd, digest: sha256Digest('y'), size: 1 }],
  }));
  const zdst = await openDaemonDestination(daemonRef('z', '1'), { docker: engine.docker, tmpDir: dir });
  await zdst.putBlob(async () => Readable.from([await readFile(files.config)]), { mediaType: MediaType.dockerConfig });
  await zdst.putBlob(async () => Readable.from(['z']), { mediaType: MediaType.dockerLayerZstd });
  await zdst.putBlob(async () => Readable.from(['y']), { mediaType: MediaType.dockerLayerZstd });
  await assert.rejects(zdst.putManifest(zstdManifest, MediaType.dockerManifest), (err: unknown) => {
    assert.ok(err instanceof BuildfleetError && err.kind === 'unsupported', String(err));
    assert.match(err.message, /Docker 20 cannot load zstd layers/);
    return true;
  });
  await zdst.abort();
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('buildfleet-')), []);
});

test('a corrupt layer never reaches the daemon; a failed docker load is one clear error', { timeout: 60_000 }, async () => {
  const { tar: fresh } = await uniqueLayer();
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256Digest(fresh)] } }));
  const dst = await openDaemonDestination(daemonRef('broken', '1'), { docker: engine.docker, tmpDir: dir });
  await dst.putBlob(async () => Readable.from([configBytes]), { mediaType: MediaType.dockerConfig, digest: sha256Digest(configBytes) });
  const flipped = Buffer.from(fresh);
  flipped[600] = flipped[600]! ^ 0xff;
  await assert.rejects(
    dst.putBlob(async () => Readable.from([flipped]), { mediaType: MediaType.dockerLayer, digest: sha256Digest(fresh), size: fresh.length }),
    (err: unknown) => err instanceof BuildfleetError && err.kind === 'integrity',
  );
  await dst.abort();
  await assert.rejects(inspect('broken:1'));

  // A config whose diff_id does not match the layer: docker load itself refuses; the error says so.
  const wrong = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256Digest('not it')] } }));
  const dst2 = await openDaemonDestination(daemonRef('broken', '2'), { docker: engine.docker, tmpDir: dir });
  const c = await dst2.putBlob(async () => Readable.from([wrong]), { mediaType: MediaType.dockerConfig });
  const l = await dst2.putBlob(async () => Readable.from([fresh]), { mediaType: MediaType.dockerLayer });
  await dst2.putManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.dockerManifest, config: c, layers: [l] })), MediaType.dockerManifest);
  await assert.rejects(dst2.commit(), (err: unknown) => {
    assert.ok(err instanceof BuildfleetError, String(err));
    assert.equal(err.kind, 'integrity');
    assert.match(err.message, /^docker-daemon:broken:2: docker load failed: invalid diffID for layer 0: expected "sha256:/);
    assert.ok(!err.message.includes('\n'));
    return true;
  });
  await dst2.abort();
  await assert.rejects(inspect('broken:2'));
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('buildfleet-')), []);
});

test('a missing image is not-found, an unreachable daemon is a network error', { timeout: 30_000 }, async () => {
  await assert.rejects(openDaemonSource(daemonRef('nope', 'v9'), { docker: engine.docker, tmpDir: dir }), (err: unknown) => {
    assert.ok(err instanceof BuildfleetError && err.kind === 'not-found', String(err));
    assert.equal(err.message, `image nope:v9 not found in the Docker daemon at unix://${engine.socketPath}`);
    return true;
  });
  const gone = new Dockerode({ socketPath: join(dir, 'no-such.sock') });
  await assert.rejects(openDaemonSource(daemonRef('x', '1'), { docker: gone, tmpDir: dir }), (err: unknown) => {
    assert.ok(err instanceof BuildfleetError && err.kind === 'network', String(err));
    assert.match(err.message, /cannot reach the Docker daemon at unix:\/\/.*no-such\.sock \(ENOENT\)/);
    return true;
  });
  assert.equal(dockerEndpoint(dockerFromEnvironment({ DOCKER_HOST: 'unix:///run/x.sock' })), 'unix:///run/x.sock');
  assert.equal(dockerEndpoint(dockerFromEnvironment({ DOCKER_HOST: 'tcp://127.0.0.1:2375' })), 'tcp://127.0.0.1:2375');
  assert.equal(dockerEndpoint(dockerFromEnvironment({})), 'unix:///var/run/docker.sock');
  assert.throws(() => dockerFromEnvironment({ DOCKER_HOST: 'ssh://me@host' }), /not supported/);
  assert.equal(existsSync(join(dir, 'no-such.sock')), false);
});
