import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { openDestination } from '../../imagebuilder/transports/index.js';
import { RegistryServer } from '../../nodepool/daemons/index.js';
import { parseDiskstats } from '../../nodepool/agent/detectors/disk-signals.js';
import { parsePoolSpec } from '../../nodepool/pool-spec/pool-spec.js';
import { PoolManager } from '../../nodepool/pool.js';
import type { Provider } from '../../nodepool/provider.js';
import { StateStore } from '../../nodepool/state/store.js';
import { cleanUpOnce, deleteEveryPool, tempDir } from '../harness.js';
import { writeRunnableImage } from '../runnable-image.js';
import { writeDiskIsolationReport } from './chart.js';
import { LAYOUTS, summarize, type DiskIsolationReport, type Layout, type Load, type Period, type Probe } from './report.js';

/**
 * Disk isolation: for each node layout (single disk: data-root and builds on one disk under one
 * budget; dual: a runtime disk and a workload disk, each with its own budget) a fresh one-node
 * local pool; per run, an idle period and a period with I/O-heavy build jobs (`dd ... conv=fsync`
 * loops in /workspace, run as `pool exec` runs them), each time probing the node's Docker API
 * back to back (`docker ps`, `docker run --rm IMAGE true`) and recording the saturation
 * conditions the node's agent raises. Needs root (loop disks, dockerd).
 */

const MiB = 1024 ** 2;

export type DiskIsolationPreset = {
  runs: number;
  writers: number;
  loadSeconds: number;
  idleSeconds: number;
  /** Each disk's write and read budget. */
  budgetMiBps: number;
  diskSize: string;
  /** MiB each writer's dd writes (and fsyncs) before it starts over. */
  chunkMiB: number;
};

export const DISK_ISOLATION_PRESETS = {
  small: { runs: 1, writers: 2, loadSeconds: 6, idleSeconds: 2, budgetMiBps: 50, diskSize: '512M', chunkMiB: 16 },
  default: { runs: 3, writers: 4, loadSeconds: 30, idleSeconds: 8, budgetMiBps: 50, diskSize: '2G', chunkMiB: 64 },
} satisfies Record<string, DiskIsolationPreset>;
export type DiskIsolationPresetName = keyof typeof DISK_ISOLATION_PRESETS;

export type DiskIsolationOptions = {
  preset?: DiskIsolationPresetName;
  runs?: number;
  /** Also write report.md, report.json and the chart (SVG, PNG) here. */
  out?: string;
  log?: (line: string) => void;
};

const LAYOUT_WHAT: Record<Layout, string> = {
  single: 'one disk (disks.layout single): the data-root and the builds\' /workspace share it and its budget',
  dual: 'a runtime disk (data-root) and a workload disk (/workspace), each with its own budget (disks.layout dual, the default)',
};

export async function benchDiskIsolation(options: DiskIsolationOptions = {}): Promise<DiskIsolationReport> {
  if (process.getuid?.() !== 0) throw new BuildfleetError('environment', 'bench disk-isolation starts local nodes (loop disks, dockerd): run as root');
  const presetName = options.preset ?? 'default';
  const preset = { ...DISK_ISOLATION_PRESETS[presetName], ...(options.runs && { runs: options.runs }) };
  const log = options.log ?? (() => {});
  const work = await tempDir('buildfleet-diskiso-');
  let registry: RegistryServer | undefined;
  let manager: PoolManager | undefined;
  const cleanUp = cleanUpOnce(async () => {
    await deleteEveryPool(manager);
    await registry?.stop();
    await work.remove();
  }, log);
  try {
    registry = await RegistryServer.start({ root: join(work.path, 'registry') });
    const image = `${registry.host}/diskiso/build:1`;
    await writeRunnableImage(await openDestination(image));
    manager = new PoolManager(new StateStore(join(work.path, 'state')));
    const budget = preset.budgetMiBps * MiB;
    const disk = { size: preset.diskSize, writeBytesPerSecond: budget, readBytesPerSecond: budget };
    const periods: Period[] = [];
    for (const layout of LAYOUTS) {
      const pool = `diskiso-${layout}`;
      log(`${layout}: a one-node pool`);
      await manager.apply(
        parsePoolSpec({
          name: pool,
          nodes: 1,
          disks: { runtime: disk, workload: disk, layout },
          images: [image],
          // A short window, so a condition shows within a period of the small preset too.
          saturation: { windowSeconds: 2, sampleSeconds: 0.25 },
        }),
        { timeoutMs: 600_000 },
      );
      const node = await NodeUnderTest.open(manager, pool);
      for (let run = 1; run <= preset.runs; run++) {
        for (const load of ['idle', 'build I/O'] as const) {
          log(`${layout} run ${run}/${preset.runs}: ${load === 'idle' ? `idle, ${preset.idleSeconds} s` : `${preset.writers} writer(s), ${preset.loadSeconds} s`}`);
          const period = await node.measure(layout, load, run, preset);
          log(`${layout} run ${run}/${preset.runs} ${load}: ${period.latencies['docker run'].length} docker run, ${period.latencies['docker ps'].length} docker ps; raised ${period.conditions.join(', ') || 'nothing'}`);
          periods.push(period);
        }
      }
      await manager.delete(pool);
    }
    const report = summarize(
      {
        preset: presetName,
        cores: availableParallelism(),
        runs: preset.runs,
        writers: preset.writers,
        loadSeconds: preset.loadSeconds,
        budgetMiBps: { write: preset.budgetMiBps, read: preset.budgetMiBps },
        startedAt: new Date().toISOString(),
        layouts: LAYOUT_WHAT,
        writer: `a build job each (through the provider's runJob, as pool exec runs it): dd if=/dev/zero of=/workspace/... bs=1M count=${preset.chunkMiB} conv=fsync, over and over`,
      },
      periods,
    );
    if (options.out) log(`wrote ${(await writeDiskIsolationReport(report, options.out)).join(', ')}`);
    return report;
  } finally {
    await cleanUp.done();
  }
}

/** The pool's one node: its Docker API, its status, and the jobs that load its disks. */
class NodeUnderTest {
  private constructor(
    private readonly provider: Provider,
    private readonly pool: string,
    private readonly docker: Docker,
    private readonly image: string,
    private readonly devices: { runtime: string; workload: string },
  ) {}

  static async open(manager: PoolManager, pool: string): Promise<NodeUnderTest> {
    const provider = await manager.providerOf(pool);
    const node = await provider.describeNode(pool, 'n1');
    const socket = node.details?.dockerSocket;
    const image = (await provider.status.read(pool, 'n1'))?.images[0]?.pinned;
    const { runtimeLoopDevice: runtime, workloadLoopDevice: workload } = node.details ?? {};
    if (typeof socket !== 'string' || !image || typeof runtime !== 'string' || typeof workload !== 'string') {
      throw new BuildfleetError('environment', `${pool}-n1: no Docker socket, image or disk devices to probe`);
    }
    return new NodeUnderTest(provider, pool, new Docker({ socketPath: socket }), image, { runtime, workload });
  }

  async measure(layout: Layout, load: Load, run: number, preset: DiskIsolationPreset): Promise<Period> {
    // An idle period starts on a calm node: a condition left set by the last load (hysteresis) is not the idle node's.
    if (load === 'idle') await this.waitCalm(60_000);
    const conditions = new Set<string>();
    let done = false;
    const watching = this.watchConditions(conditions, () => done);
    const writers = load === 'idle' ? [] : Array.from({ length: preset.writers }, (_, i) => this.writer(`w${run}-${i}`, preset));
    const seconds = load === 'idle' ? preset.idleSeconds : preset.loadSeconds;
    const devicesBefore = await this.deviceBytesWritten();
    const started = performance.now();
    const latencies: Record<Probe, number[]> = { 'docker ps': [], 'docker run': [] };
    try {
      // Probes back to back for the period, as a CI agent polling its node would; at least one of each.
      while (latencies['docker run'].length === 0 || performance.now() - started < seconds * 1000) {
        latencies['docker ps'].push(await timed(() => this.docker.listContainers({ all: true })));
        latencies['docker run'].push(await timed(() => this.runTrue()));
        await sleep(100);
      }
      const written = await Promise.all(writers);
      const periodSeconds = (performance.now() - started) / 1000;
      const devicesAfter = await this.deviceBytesWritten();
      const deviceBytesWritten = {
        runtime: devicesAfter.runtime - devicesBefore.runtime,
        ...(devicesAfter.workload !== undefined && { workload: devicesAfter.workload - (devicesBefore.workload ?? 0) }),
      };
      return { layout, load, run, seconds: periodSeconds, latencies, conditions: [...conditions].sort(), bytesWritten: written.reduce((a, b) => a + b, 0), deviceBytesWritten };
    } finally {
      done = true;
      await watching;
      await Promise.allSettled(writers);
    }
  }

  /** Bytes written so far to the node's disk devices (diskstats sectors); one device for a single-disk node. */
  private async deviceBytesWritten(): Promise<{ runtime: number; workload?: number }> {
    const stats = parseDiskstats(await readFile('/proc/diskstats', 'utf8'));
    const bytes = (device: string) => (stats.get(basename(device))?.sectorsWritten ?? 0) * 512;
    const { runtime, workload } = this.devices;
    return { runtime: bytes(runtime), ...(workload !== runtime && { workload: bytes(workload) }) };
  }

  /** `docker run --rm IMAGE true`: create, start, wait, remove. */
  private async runTrue(): Promise<void> {
    const container = await this.docker.createContainer({ Image: this.image, Cmd: ['true'], HostConfig: { NetworkMode: 'host' } });
    try {
      await container.start();
      const { StatusCode } = (await container.wait()) as { StatusCode: number };
      if (StatusCode !== 0) throw new BuildfleetError('environment', `docker run ${this.image} true exited ${StatusCode}`);
    } finally {
      await container.remove({ force: true });
    }
  }

  /** A build job that writes and fsyncs chunks to /workspace for the period; gives the bytes it wrote. */
  private async writer(id: string, preset: DiskIsolationPreset): Promise<number> {
    const script = [
      `end=$(( $(cut -d. -f1 /proc/uptime) + ${preset.loadSeconds} )); n=0`,
      `while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do dd if=/dev/zero of=/workspace/out bs=1M count=${preset.chunkMiB} conv=fsync 2>/dev/null || exit 9; n=$((n+1)); done`,
      'rm -f /workspace/out; echo "chunks $n"',
    ].join('\n');
    let stdout = '';
    const collect = new Writable({ write: (chunk: Buffer, _encoding, next) => ((stdout += chunk.toString()), next()) });
    const job = await this.provider.runJob(this.pool, 'n1', { id: `diskiso-${id}`, image: this.image, command: ['sh', '-c', script] }, { stdout: collect, stderr: discard(), log: () => {} });
    const chunks = /chunks (\d+)/.exec(stdout);
    if (job.exitCode !== 0 || !chunks) throw new BuildfleetError('environment', `writer ${id} exited ${job.exitCode}: ${stdout.trim()}`);
    return Number(chunks[1]) * preset.chunkMiB * MiB;
  }

  private async saturated(): Promise<string[]> {
    const status = await this.provider.status.read(this.pool, 'n1').catch(() => undefined);
    return Object.entries(status?.conditions ?? {}).flatMap(([type, condition]) => (type.endsWith('DiskSaturated') && condition?.status === 'True' ? [type] : []));
  }

  private async waitCalm(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((await this.saturated()).length > 0 && Date.now() < deadline) await sleep(250);
  }

  /** Every disk Saturated condition the agent sets True while the period runs. */
  private async watchConditions(raised: Set<string>, finished: () => boolean): Promise<void> {
    while (!finished()) {
      for (const type of await this.saturated()) raised.add(type);
      await sleep(200);
    }
  }
}

async function timed(action: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await action();
  return (performance.now() - started) / 1000;
}

function discard(): Writable {
  return new Writable({ write: (_chunk, _encoding, next) => next() });
}
