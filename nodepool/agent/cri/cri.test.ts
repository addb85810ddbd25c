import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { execa } from 'execa';
import { BuildfleetError } from '../../../imagebuilder/errors.js';
import { RegistryServer } from '../../daemons/index.js';
import { ensureMachineSetup, stopProcess, tempDir } from '../../../test/helpers/real.js';
import { RuntimeProbeDetector } from '../detectors/runtime-probe.js';
import type { DetectorSink } from '../problems.js';
import { CriClient } from './client.js';
import { CriContainerd } from './cri-containerd.js';
import { CriRuntime, detectRuntimeKind } from './cri-runtime.js';
import { CRI_API_PROTO } from './api-proto.js';
import { grpc, serviceConstructor } from './grpc-unix.js';
import { ContainerdImages, PINNED_LABEL } from './pin.js';
import { pushRunnableTinyImage } from '../../../test/helpers/registry-fakes.js';

/** A real containerd 1.6 with its CRI plugin (own root, state, socket), pulling from a real registry. */

let registry: RegistryServer;
let containerd: CriContainerd;
let dir: { path: string; remove(): Promise<void> };
let image: { reference: string; digest: string };
let cri: CriClient;
const closers: Array<() => Promise<void> | void> = [];

before(async () => {
  await ensureMachineSetup();
  dir = await tempDir('cri-test-');
  registry = await RegistryServer.start();
  containerd = await CriContainerd.start({ root: join(dir.path, 'containerd'), plainHttp: [new URL(registry.url).host] });
  image = await pushRunnableTinyImage(registry.url, 'ci/build', 'v1');
  cri = new CriClient(containerd.socketPath);
});

after(async () => {
  for (const close of closers.reverse()) await close();
  cri?.close();
  if (containerd?.pid) process.kill(containerd.pid, 'SIGCONT');
  await containerd?.stop();
  await registry?.stop();
  await dir?.remove();
});

test('the CRI client on containerd: version, status, running containers, an image by digest pulled and listed', { timeout: 60_000 }, async () => {
  const version = await cri.version();
  assert.equal(version.runtimeName, 'containerd');
  assert.equal(version.runtimeApiVersion, 'v1');
  assert.ok((await cri.status()).some((c) => c.type === 'RuntimeReady' && c.status));
  const runtime = new CriRuntime(cri);
  assert.deepEqual(await runtime.listContainers(), []);
  const wanted = { pinned: image.reference, digest: image.digest };
  assert.equal(await runtime.hasImage(wanted), false);
  await runtime.pullImage(wanted);
  assert.equal(await runtime.hasImage(wanted), true);
  assert.equal(await runtime.hasImage({ pinned: image.reference, digest: 'sha256:' + '0'.repeat(64) }), false);
  assert.ok((await cri.listImages()).some((i) => i.repoDigests.includes(image.reference)));
});

test('the CRI probe: a stopped containerd misses the deadline, counted as a hang; it answers again once continued', { timeout: 30_000 }, async () => {
  const events: string[] = [];
  const sink: DetectorSink = { problem: () => {}, event: (name, fields) => events.push(`${name} ${String(fields.error)}`), observe: () => {} };
  const detector = new RuntimeProbeDetector(new CriRuntime(cri), 2, sink);
  assert.equal((await detector.probe(2000)).ok, true);
  await stopProcess(containerd.pid!);
  try {
    const first = await detector.probe(500);
    assert.deepEqual([first.ok, first.hung], [false, false]);
    const second = await detector.probe(500);
    assert.deepEqual([second.ok, second.hung, second.error], [false, true, 'no answer within 500 ms']);
    assert.ok(second.latencyMs < 2000, `the deadline held: ${second.latencyMs} ms`);
  } finally {
    process.kill(containerd.pid!, 'SIGCONT');
  }
  const again = await detector.probe(5000);
  assert.deepEqual([again.ok, again.hung], [true, false]);
  assert.deepEqual(events, ['probe-failed no answer within 500 ms', 'probe-failed no answer within 500 ms']);
});

test('--runtime auto: CRI on containerd\'s socket, Docker on a Docker API socket, one line for neither', { timeout: 30_000 }, async () => {
  assert.equal(await detectRuntimeKind(containerd.socketPath), 'cri');
  const dockerSocket = join(dir.path, 'docker.sock');
  const docker: Server = createServer((req, res) => res.writeHead(req.url?.endsWith('/_ping') ? 200 : 404, { 'content-type': 'text/plain' }).end('OK'));
  await new Promise<void>((resolve) => docker.listen(dockerSocket, resolve));
  closers.push(() => new Promise<void>((resolve) => docker.close(() => resolve())));
  assert.equal(await detectRuntimeKind(dockerSocket), 'docker');
  await assert.rejects(detectRuntimeKind(join(dir.path, 'none.sock'), 500), (e: unknown) => e instanceof BuildfleetError && e.kind === 'environment' && /^nothing answers on .*none\.sock as a CRI runtime .* or a Docker Engine: .*; give --runtime-socket, or --runtime cri\|docker$/.test(e.message));
});

test('pinning: the label on every name of the image in k8s.io, other labels kept; CRI ListImages reports it pinned where the runtime maps the label', { timeout: 60_000 }, async () => {
  const runtime = new CriRuntime(cri);
  if (!(await runtime.hasImage({ pinned: image.reference, digest: image.digest }))) await runtime.pullImage({ pinned: image.reference, digest: image.digest });
  const images = new ContainerdImages(containerd.socketPath);
  closers.push(() => images.close());
  // containerd >= 1.7's CRI ImageService: an image is pinned when a record of it carries the label (labels.PinnedImageLabelKey).
  // Debian's containerd 1.6.20 predates that field, so this server serves ListImages from the real records by that rule.
  const criSocket = join(dir.path, 'cri-1.7.sock');
  const server = new grpc.Server();
  server.addService(serviceConstructor(CRI_API_PROTO, 'runtime.v1.ImageService').service, {
    ListImages: (_call: unknown, done: (err: null, response: object) => void) => {
      void images.list().then((records) => {
        const byTarget = new Map<string, typeof records>();
        for (const record of records) byTarget.set(record.target.digest, [...(byTarget.get(record.target.digest) ?? []), record]);
        done(null, { images: [...byTarget.values()].map((group) => ({ id: group[0]!.target.digest, repoDigests: group.map((r) => r.name).filter((n) => n.includes('@')), pinned: group.some((r) => r.labels[PINNED_LABEL] === 'pinned') })) });
      });
    },
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${criSocket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  closers.push(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));
  const served = new CriClient(criSocket);
  closers.push(() => served.close());
  const pinnedOf = async () => (await served.listImages()).find((i) => i.repoDigests.includes(image.reference))?.pinned;

  assert.equal(await pinnedOf(), false);
  const names = await images.pin(image.digest);
  assert.ok(names.includes(image.reference), names.join());
  assert.equal(await pinnedOf(), true);
  // Read back by containerd's own CLI: the label is on every name, and the CRI plugin's own label is still there.
  const listed = await execa('ctr', ['--address', containerd.socketPath, '-n', 'k8s.io', 'images', 'ls']);
  const rows = listed.stdout.split('\n').filter((line) => line.includes(image.digest));
  assert.equal(rows.length, names.length);
  for (const row of rows) assert.match(row, /io\.cri-containerd\.image=managed/), assert.match(row, /io\.cri-containerd\.pinned=pinned/);
  // The real CRI plugin still serves the image (the update touched one label only).
  assert.ok((await cri.listImages()).some((i) => i.repoDigests.includes(image.reference)));
  assert.deepEqual(await images.pin(image.digest), names, 'pinning again changes nothing');
  await assert.rejects(images.pin('sha256:' + '1'.repeat(64)), (e: unknown) => e instanceof BuildfleetError && e.kind === 'not-found');
});
