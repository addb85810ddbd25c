import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { execa } from 'execa';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { copyImage } from '../../imagebuilder/copy/copy.js';
import { squashImage } from '../../imagebuilder/squash/squash.js';
import { openDestination, openSource } from '../../imagebuilder/transports/index.js';
import { RegistryServer } from '../../nodepool/daemons/index.js';
import { parsePoolSpec } from '../../nodepool/pool-spec/pool-spec.js';
import { PoolManager } from '../../nodepool/pool.js';
import { phaseTimes, type PhaseTimes } from '../../nodepool/state/lifecycle.js';
import { blobCacheDir, StateStore } from '../../nodepool/state/store.js';
import { SharedBlobCache } from '../../nodepool/prepull/blob-cache.js';
import { BUILD_IMAGE_PRESETS, writeBuildImage, type BuildImagePresetName } from '../build-image.js';
import { cleanUpOnce, deleteEveryPool, tempDir } from '../harness.js';
import { hostBusyCpuSeconds, waitForQuietHost } from '../stats.js';
import { writeReport } from './chart.js';
import { extractFloor, streamFloor } from './floors.js';
import { openUpstream, warmRegistryBlobs, type UpstreamLink } from './upstream.js';
import { summarize, type FloorRun, type NodeRun, type Phase, type TimeToReadyReport } from './report.js';

/**
 * Time to ready of cold nodes: for each image variant and run, a fresh local pool of
 * `concurrent` nodes (new disks, new containerd and dockerd, nothing cached) pre-pulls the
 * variant, then each node starts its first container of it. Phases come from the nodes' own
 * status (through the provider's status source) and the first container's run; the two floors
 * are measured in the same run on the same kind of disk. Needs root (loop disks, dockerd).
 */

export const VARIANTS = ['layered', 'k1', 'k4', 'k8', 'layered-direct', 'k4-direct', 'k8-direct', 'k1-preloaded'] as const;
/**
 * The image (layered, or squashed to kN) and the pre-pull mode: none for the runtime's own pull,
 * `-direct` for buildfleet's direct pre-pull, `-preloaded` for nodes cloned from a baked runtime disk.
 */
export type VariantName = `${'layered' | `k${number}`}${'' | '-direct' | '-preloaded'}`;
type PrepullMode = 'pull' | 'direct' | 'preloaded-disk';

export type TimeToReadyOptions = {
  /** A user's own image (any transport); else the preset is generated. */
  image?: string;
  preset?: BuildImagePresetName;
  variants?: VariantName[];
  runs?: number;
  concurrent?: number;
  /** Caps the link from the upstream registry to the nodes (and the floors) at this many megabits per second, shared. */
  upstreamMbps?: number;
  /** Also write report.md, report.json and the chart (SVG, PNG) here. */
  out?: string;
  /** Before each run, wait up to this long for a quiet host (default 60; 0: only flush); a busy host makes the figures vary. */
  settleSeconds?: number;
  log?: (line: string) => void;
};

const PHASE_OF: Record<Phase, keyof PhaseTimes | 'firstRunMs'> = {
  provision: 'provisionMs',
  'runtime up': 'runtimeUpMs',
  download: 'downloadMs',
  'decompress + extract': 'extractMs',
  'first run': 'firstRunMs',
};

export function parseVariant(text: string): VariantName {
  const match = /^(layered|k([1-9][0-9]?))(-preloaded|-direct)?$/.exec(text);
  if (!match) throw new BuildfleetError('usage', `--variants: ${JSON.stringify(text)} is not a variant: give layered or kN (N layers, 1-99), either with -direct or -preloaded, e.g. layered,k1,k4-direct,k1-preloaded`);
  return `${match[2] ? `k${Number(match[2])}` : 'layered'}${match[3] ?? ''}` as VariantName;
}

/** The image tag a variant's nodes pull, and how they get it. */
function variantParts(variant: VariantName): { image: string; mode: PrepullMode; preloaded: boolean; k?: number } {
  const [image, suffix] = variant.split('-') as [string, string | undefined];
  const mode: PrepullMode = suffix === 'preloaded' ? 'preloaded-disk' : suffix === 'direct' ? 'direct' : 'pull';
  return { image, mode, preloaded: mode === 'preloaded-disk', ...(image !== 'layered' && { k: Number(image.slice(1)) }) };
}

function describe(variant: VariantName, layeredLayers: number, bakeSeconds?: number): string {
  const { k, mode } = variantParts(variant);
  const image = k === undefined ? `the source as built, ${layeredLayers} layers` : k === 1 ? 'squashed to one layer (buildfleet image squash)' : `squashed to ${k} size-balanced layers`;
  if (mode === 'preloaded-disk') return `${image}, nodes cloned from a preloaded runtime disk (prepull.mode preloaded-disk; baked once in ${bakeSeconds?.toFixed(1)} s, not counted)`;
  return mode === 'direct' ? `${image}, through buildfleet's direct pre-pull (prepull.mode direct)` : `${image}, through the runtime's own pull`;
}

export async function benchTimeToReady(options: TimeToReadyOptions = {}): Promise<TimeToReadyReport> {
  if (process.getuid?.() !== 0) throw new BuildfleetError('environment', 'bench time-to-ready starts local nodes (loop disks, dockerd): run as root');
  const log = options.log ?? (() => {});
  const runs = options.runs ?? 3;
  const concurrent = options.concurrent ?? 1;
  const settleSeconds = options.settleSeconds ?? 60;
  const variants = options.variants ?? [...VARIANTS];
  const work = await tempDir('buildfleet-ttr-');
  let registry: RegistryServer | undefined;
  let upstream: UpstreamLink | undefined;
  let manager: PoolManager | undefined;
  const cleanUp = cleanUpOnce(async () => {
    await deleteEveryPool(manager);
    await upstream?.stop();
    await registry?.stop();
    await work.remove();
  }, log);
  try {
    registry = await RegistryServer.start({ root: join(work.path, 'registry') });
    // Nodes and floors reach the registry through the upstream link (counted, capped when asked).
    upstream = await openUpstream(registry, { ...(options.upstreamMbps && { mbps: options.upstreamMbps }) });
    const ref = (tag: string) => `${registry!.host}/ttr/build:${tag}`;
    const nodeRef = (tag: string) => `${upstream!.host}/ttr/build:${tag}`;
    const layered = ref('layered');
    let imageName: string;
    if (options.image) {
      log(`copying ${options.image} into the bench registry`);
      const source = await openSource(options.image, { tmpDir: work.path });
      try {
        await copyImage(source, await openDestination(layered, { tmpDir: work.path }));
      } finally {
        await source.close();
      }
      imageName = options.image;
    } else {
      const preset = options.preset ?? 'small';
      log(`generating the ${preset} build image`);
      await writeBuildImage(await openDestination(layered), BUILD_IMAGE_PRESETS[preset], log);
      imageName = `generated build image, preset ${preset}`;
    }

    // K=1 is always made: the floors stream its one layer.
    const squashed = new Map<number, { uncompressed: number; layers: string[] }>();
    let layeredLayers = 0;
    for (const k of [...new Set([1, ...variants.flatMap((v) => variantParts(v).k ?? [])])]) {
      log(`squashing to ${k} layer(s)`);
      const report = await squashImage(await openSource(layered), await openDestination(ref(`k${k}`)), { layers: k, tmpDir: work.path });
      layeredLayers = report.layers.before;
      squashed.set(k, { uncompressed: report.bytes.uncompressedAfter, layers: await layerDigests(ref(`k${k}`)) });
    }
    const k1 = squashed.get(1)!;
    const layeredBlobs = await layerDigests(layered);
    const blobsOf = (variant: VariantName) => {
      const { k } = variantParts(variant);
      return k === undefined ? layeredBlobs : squashed.get(k)!.layers;
    };
    // Room for the image, its extraction and the runtime's temp files; a node disk like a real one.
    const runtimeDisk = Math.max(2 * 1024 ** 3, Math.ceil((k1.uncompressed * 4) / 1024 ** 3) * 1024 ** 3);

    const stateRoot = join(work.path, 'state');
    manager = new PoolManager(new StateStore(stateRoot));
    const nodeRuns: NodeRun[] = [];
    const bakeSeconds = new Map<VariantName, number>();
    for (const variant of variants) {
      // One pool per variant, scaled up to cold nodes and back to zero for each run, as an
      // operator's pool is: a preloaded pool keeps its baked disk between runs.
      const { image, preloaded, mode } = variantParts(variant);
      const pool = `ttr-${variant}`;
      const spec = (nodes: number) =>
        parsePoolSpec({ name: pool, nodes, disks: { runtime: runtimeDisk, workload: '1G' }, images: [nodeRef(image)], prepull: { mode } });
      await manager.apply(spec(0));
      if (preloaded) {
        // Once per digest, like a GKE disk image for secondary boot disks: made ahead, not per node.
        log(`${variant}: baking the runtime disk`);
        bakeSeconds.set(variant, (await manager.preload(spec(0))).seconds);
      }
      for (let run = 1; run <= runs; run++) {
        // Cold: nothing the host kept from the run before (the blob cache the direct pre-pull shares).
        await new SharedBlobCache(blobCacheDir(stateRoot)).remove();
        await warmRegistryBlobs(registry, blobsOf(variant));
        await settle(settleSeconds, log);
        log(`${variant} run ${run}/${runs}: ${concurrent} cold node(s)`);
        await upstream.takeBytes();
        const cpuBefore = await hostBusyCpuSeconds();
        await manager.apply(spec(concurrent), { timeoutMs: 3_600_000 });
        const upstreamBytes = await upstream.takeBytes();
        const nodes = await measureNodes(manager, pool, variant, run);
        const cpuAfter = await hostBusyCpuSeconds();
        // What the whole host spent from "add the nodes" to their first containers: on a machine
        // whose cores are all busy, no run can be shorter than this over the cores.
        const hostCpuSeconds = cpuBefore !== undefined && cpuAfter !== undefined ? cpuAfter - cpuBefore : undefined;
        nodeRuns.push(...nodes.map((node) => ({ ...node, upstreamBytes, ...(hostCpuSeconds !== undefined && { hostCpuSeconds }) })));
        const slowest = nodeRuns.filter((r) => r.variant === variant && r.run === run).reduce((a, b) => (b.readySeconds > a.readySeconds ? b : a));
        log(`${variant} run ${run}/${runs}: Ready and first container in ${slowest.readySeconds.toFixed(2)} s`);
        await manager.apply(spec(0));
      }
      await manager.delete(pool);
    }

    const floorRuns: FloorRun[] = [];
    const floorInput = { layerUrls: k1.layers.map((digest) => `http://${upstream!.host}/v2/ttr/build/blobs/${digest}`), workDir: join(work.path, 'floors'), diskBytes: runtimeDisk };
    await mkdir(floorInput.workDir, { recursive: true });
    for (let run = 1; run <= runs; run++) {
      log(`floors run ${run}/${runs}`);
      await warmRegistryBlobs(registry, k1.layers);
      await settle(settleSeconds, log);
      floorRuns.push(await streamFloor(floorInput, run));
      await settle(settleSeconds, log);
      floorRuns.push(await extractFloor(floorInput, run));
    }

    const report = summarize(
      {
        image: imageName,
        ...(options.image ? {} : { preset: options.preset ?? 'small' }),
        cores: availableParallelism(),
        concurrent,
        ...(options.upstreamMbps && { upstreamMbps: options.upstreamMbps }),
        runsPerVariant: runs,
        startedAt: new Date().toISOString(),
        variants: Object.fromEntries(variants.map((variant) => [variant, describe(variant, layeredLayers, bakeSeconds.get(variant))])),
      },
      nodeRuns,
      floorRuns,
    );
    if (options.out) log(`wrote ${(await writeReport(report, options.out)).join(', ')}`);
    return report;
  } finally {
    await cleanUp.done();
  }
}

/** The layer blobs of an image in the bench registry, in manifest order. */
async function layerDigests(reference: string): Promise<string[]> {
  const source = await openSource(reference);
  try {
    return (await source.resolve()).manifest.layers.map((layer) => layer.digest);
  } finally {
    await source.close();
  }
}

/**
 * Every run starts from a host at rest: what the runs before it wrote is flushed, and the host's
 * background work (a deleted node's blocks freed, reclaim) has died down.
 */
async function settle(seconds: number, log: (line: string) => void): Promise<void> {
  await execa('sync');
  if (seconds === 0) return;
  const waited = await waitForQuietHost(availableParallelism(), { timeoutMs: seconds * 1000 });
  if (waited > 1.5) log(`waited ${waited.toFixed(1)} s for the host to be quiet`);
}

/** Each node's phases from its status source, then its first container of the build image. */
async function measureNodes(manager: PoolManager, pool: string, variant: VariantName, run: number): Promise<NodeRun[]> {
  const provider = await manager.providerOf(pool);
  const ids = await provider.listNodes(pool);
  return Promise.all(
    ids.map(async (id, index) => {
      const status = await provider.status.read(pool, id);
      if (!status) throw new BuildfleetError('environment', `${pool}-${id}: no status to measure`);
      const image = status.images[0]?.pinned;
      if (!image) throw new BuildfleetError('environment', `${pool}-${id}: no image in its status`);
      const started = performance.now();
      const job = await provider.runJob(pool, id, { id: `first-run-${id}`, image, command: ['true'] }, { stdout: sink(), stderr: sink(), log: () => {} });
      if (job.exitCode !== 0) throw new BuildfleetError('environment', `${pool}-${id}: the first container exited ${job.exitCode}`);
      const times = { ...phaseTimes(status.transitions, status), firstRunMs: performance.now() - started };
      const phases = Object.fromEntries(
        Object.entries(PHASE_OF).map(([phase, key]) => {
          const ms = times[key];
          if (ms === undefined) throw new BuildfleetError('environment', `${pool}-${id}: its status does not tell the ${phase} phase`);
          return [phase, ms / 1000];
        }),
      ) as Record<Phase, number>;
      return { variant, run, node: index + 1, phases, readySeconds: (times.readyMs! + times.firstRunMs) / 1000 };
    }),
  );
}

function sink(): Writable {
  return new Writable({ write: (_chunk, _encoding, done) => done() });
}
