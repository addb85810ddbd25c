import { join } from 'node:path';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { DockerEngine, RegistryServer, importBusyboxBase } from '../nodepool/daemons/index.js';
import { openDestination, openSource } from '../imagebuilder/transports/index.js';
import { copyImage, type CopyResult } from '../imagebuilder/copy/copy.js';
import { squashImage } from '../imagebuilder/squash/squash.js';
import { parsePoolSpec } from '../nodepool/pool-spec/pool-spec.js';
import { StateStore } from '../nodepool/state/store.js';
import { PoolManager } from '../nodepool/pool.js';
import { execJob } from '../nodepool/jobs.js';
import { Writable } from 'node:stream';
import { streamFloor } from '../bench/time-to-ready/floors.js';

export type QuickstartStep = { step: string; ms: number; detail: string };
export type QuickstartResult = { registry: string; image: string; manifestDigest: string; layers: number; steps: QuickstartStep[] };

/** A build image in miniature: a few toolchain-like layers, a deletion, config that must survive. */
const dockerfile = `FROM buildfleet/busybox:latest
RUN mkdir -p /opt/node/bin /opt/python/lib && dd if=/dev/urandom of=/opt/node/bin/node bs=1M count=8 2>/dev/null
RUN for i in $(seq 1 400); do echo "module $i" > /opt/python/lib/mod$i.py; done
RUN dd if=/dev/urandom of=/opt/ruby.tar bs=1M count=4 2>/dev/null
RUN rm /opt/ruby.tar
ENV PATH=/opt/node/bin:/usr/bin:/bin
WORKDIR /work
CMD ["sh", "-c", "ls /opt/python/lib | wc -l"]
`;

/**
 * The main job on the embedded local default: a local Docker Engine and OCI registry (started
 * here, stopped at the end), build an image, push it with buildfleet, copy it to an OCI layout,
 * squash it to one layer, create a dual-disk node of a local pool that pre-pulls it, run a build
 * job there, and delete the pool. All on this machine.
 */
export async function runQuickstart(log: (line: string) => void = () => {}): Promise<QuickstartResult> {
  const work = await mkdtemp(join(tmpdir(), 'buildfleet-quickstart-'));
  const steps: QuickstartStep[] = [];
  const timed = async <T>(step: string, fn: () => Promise<T>, detail: (value: T) => string): Promise<T> => {
    const started = performance.now();
    const value = await fn();
    const entry = { step, ms: Math.round(performance.now() - started), detail: detail(value) };
    steps.push(entry);
    log(`${step.padEnd(38)} ${(entry.ms / 1000).toFixed(2).padStart(6)} s  ${entry.detail}`);
    return value;
  };
  let builder: DockerEngine | undefined;
  let pools: PoolManager | undefined;
  let registry: RegistryServer | undefined;
  try {
    [builder, registry] = await timed('start Docker Engine + registry', () => Promise.all([DockerEngine.start({ root: join(work, 'builder') }), RegistryServer.start({ root: join(work, 'registry') })]), ([, r]) => `registry at ${r.host}`);
    const engine = builder;
    await timed('make base image (busybox)', () => importBusyboxBase(engine.docker), (ref) => ref);
    const context = join(work, 'context');
    await mkdir(context);
    await writeFile(join(context, 'Dockerfile'), dockerfile);
    await timed('docker build', () => engine.cli(['build', '--network', 'none', '-q', '-t', 'quickstart/build-image:v1', context]), () => 'quickstart/build-image:v1');
    const image = `${registry.host}/ci/build-image:v1`;
    const copy = async (src: string, dst: string, docker = engine): Promise<CopyResult> => {
      const source = await openSource(src, { docker: docker.docker, tmpDir: work });
      try {
        return await copyImage(source, await openDestination(dst, { docker: docker.docker, tmpDir: work }));
      } finally {
        await source.close();
      }
    };
    const pushed = await timed('push to registry (buildfleet)', () => copy('docker-daemon:quickstart/build-image:v1', image), (r) => `${r.layers.length} layers, ${r.manifestDigest.slice(0, 19)}`);
    await timed('copy to OCI layout', () => copy(image, `oci:${join(work, 'layout')}:v1`), (r) => `${r.layers.length} layers`);
    const squashed = `${registry.host}/ci/build-image:squashed`;
    await timed('squash to one layer (buildfleet)', async () => squashImage(await openSource(image), await openDestination(squashed), { tmpDir: work }), (r) => `${r.layers.before} -> ${r.layers.after} layers, ${(r.shadowedBytes / 1e6).toFixed(1)} MB shadowed content dropped`);
    // A real node of a local pool: its own disks and runtime; Ready only once the image is there.
    pools = new PoolManager(new StateStore(join(work, 'state')));
    const manager = pools;
    const pool = await timed('create a dual-disk node (local pool)', () => manager.apply(parsePoolSpec({ name: 'quickstart', nodes: 1, disks: { runtime: '1G', workload: '1G' }, images: [squashed] })), (r) => {
      const node = r.pool!.nodes[0]!;
      const t = node.phaseTimes;
      const s = (ms: number | undefined) => `${((ms ?? 0) / 1000).toFixed(2)} s`;
      return `${node.name} ${node.phase} in ${s(t.readyMs)}: provision ${s(t.provisionMs)}, download ${s(t.downloadMs)}, extract ${s(t.extractMs)}, runtime up ${s(t.runtimeUpMs)}`;
    });
    const node = pool.pool!.nodes[0]!;
    const prePullMs = (node.phaseTimes.downloadMs ?? 0) + (node.phaseTimes.extractMs ?? 0);
    // The node's pre-pull beside what standard tools take for the same bytes onto a fresh disk.
    const squashedLayers = await (async () => {
      const source = await openSource(squashed);
      try {
        return (await source.resolve()).manifest.layers.map((layer) => `${registry!.url}/v2/ci/build-image/blobs/${layer.digest}`);
      } finally {
        await source.close();
      }
    })();
    await mkdir(join(work, 'floor'));
    await timed('stream floor: curl | pigz -d | tar -x', () => streamFloor({ layerUrls: squashedLayers, workDir: join(work, 'floor'), diskBytes: 1024 ** 3 }, 1), (floor) =>
      `${floor.seconds.toFixed(2)} s onto a fresh disk; the node's pre-pull (download + extract) took ${(prePullMs / 1000).toFixed(2)} s, ${(prePullMs / 1000 / floor.seconds).toFixed(2)}x the floor`,
    );
    let output = '';
    const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => void ((output += chunk.toString()), done()) });
    await timed('first build job on the node', () => execJob(manager, 'quickstart', ['sh', '-c', 'ls /opt/python/lib | wc -l'], { stdout: sink, stderr: sink }), (r) => `${r.node}, exit ${r.exitCode}, output: ${output.trim()}`);
    await timed('delete the pool', () => manager.delete(pool.plan.pool), (r) => `${r.mounts} mounts, ${r.loopDevices} loop devices released`);
    pools = undefined;
    return { registry: registry.host, image, manifestDigest: pushed.manifestDigest, layers: pushed.layers.length, steps };
  } finally {
    if (pools) await pools.delete('quickstart').catch(() => {});
    await Promise.allSettled([builder?.stop(), registry?.stop()]);
    await rm(work, { recursive: true, force: true });
  }
}
