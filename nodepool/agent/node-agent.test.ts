import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../../test/helpers/wait.js';
import type { NodePhase } from '../state/lifecycle.js';
import { readNodeStatus, writeJsonAtomically, type NodeCondition, type NodeRecord, type NodeStatus } from '../state/store.js';
import type { ContainerRuntime, DigestImage, PullProgress, RuntimeContainer } from '../runtime/container-runtime.js';
import type { RuntimeHost } from '../runtime/host.js';
import { FanOut, type Exporter } from './exporter.js';
import { NodeAgent } from './node-agent.js';
import { EventLogExporter } from './exporters/event-log.js';
import { PrometheusExporter } from './exporters/prometheus.js';
import { StatusFileExporter } from './exporters/status-file.js';

// The agent's detectors on fake inputs (a runtime that hangs on demand, a diskstats file this test
// writes), published by the real file exporters and by a test exporter at once. No root, no daemons.

/** A runtime that answers at once, or (hung) never: a probe then meets its timeout. */
class FakeRuntime implements ContainerRuntime {
  hung = false;
  readonly present = new Set<string>();
  readonly progress: PullProgress[] = [];

  async listContainers(options: { signal?: AbortSignal } = {}): Promise<RuntimeContainer[]> {
    const signal = options.signal;
    if (!this.hung || !signal) return [];
    return new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
  }

  async hasImage(image: DigestImage): Promise<boolean> {
    return this.present.has(image.digest);
  }

  async pullImage(image: DigestImage, options: { onProgress?: (progress: PullProgress) => void } = {}): Promise<void> {
    options.onProgress?.({ status: 'Pull complete', layer: 'l1' });
    this.present.add(image.digest);
  }
}

/** A host whose restart waits until the test lets it go (so the test sees the runtime's problem in the file first), then un-hangs the runtime. */
class FakeHost implements RuntimeHost {
  readonly names = { started: 'the fake runtime', restarted: 'the fake runtime' };
  readonly runtime = new FakeRuntime();
  restarts = 0;
  stopped = false;
  private release: () => void = () => {};
  private gate = new Promise<void>((resolve) => (this.release = resolve));

  async start(): Promise<ContainerRuntime> {
    return this.runtime;
  }

  async restart(): Promise<void> {
    await this.gate;
    this.restarts++;
    this.runtime.hung = false;
  }

  letRestart(): void {
    this.release();
  }

  async runningWorkloads(): Promise<string[]> {
    return [];
  }

  async stop(): Promise<void> {
    this.stopped = true;
  }
}

type Received = { type: string } & NodeCondition;

/** The test exporter: records every condition transition and phase it receives. */
class RecordingExporter implements Exporter {
  readonly transitions: Received[] = [];
  readonly phases: NodePhase[] = [];

  conditionChanged(type: string, condition: NodeCondition): void {
    this.transitions.push({ type, ...structuredClone(condition) });
  }

  statusChanged(status: Readonly<NodeStatus>): void {
    if (this.phases.at(-1) !== status.phase) this.phases.push(status.phase);
  }

  /** Each condition as its last transition left it. */
  current(): Record<string, NodeCondition> {
    return Object.fromEntries(this.transitions.map(({ type, ...condition }) => [type, condition]));
  }

  last(type: string): Received | undefined {
    return this.transitions.filter((t) => t.type === type).at(-1);
  }
}

/** /proc/diskstats as the disk detector reads it: one busy or idle device per disk, io_ticks growing with wall time while busy. */
class FakeDiskstats {
  readonly busy = { runtime: false, workload: false };
  private readonly ticks = { runtime: 0, workload: 0 };
  private last = performance.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly path: string) {}

  async start(): Promise<void> {
    await this.write();
    this.timer = setInterval(() => void this.write(), 20);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async write(): Promise<void> {
    const now = performance.now();
    for (const disk of ['runtime', 'workload'] as const) if (this.busy[disk]) this.ticks[disk] += now - this.last;
    this.last = now;
    const line = (minor: number, device: string, ticks: number) => `   7       ${minor} ${device} 10 0 80 5 20 0 160 30 0 ${Math.round(ticks)} ${Math.round(ticks * 2)} 0 0 0 0 0 0`;
    const temp = `${this.path}.tmp-${Math.random().toString(36).slice(2)}`;
    await writeFile(temp, [line(0, 'fakeloop0', this.ticks.runtime), line(1, 'fakeloop1', this.ticks.workload)].join('\n') + '\n');
    await rename(temp, this.path);
  }
}

const image = { reference: 'registry.test/ci/build:1', pinned: `registry.test/ci/build@sha256:${'a'.repeat(64)}`, digest: `sha256:${'a'.repeat(64)}` };

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'buildfleet-agent-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function nodeDir(name: string): Promise<string> {
  const nodeDir = join(dir, name);
  const disk = (role: 'runtime' | 'workload', device: string) => ({ role, file: join(nodeDir, `${role}.img`), mountPoint: join(nodeDir, role), sizeBytes: 0, loopDevice: `/dev/${device}` });
  const record: NodeRecord = {
    pool: 'fake',
    id: 'n1',
    name: `${name}-n1`,
    createdAt: new Date().toISOString(),
    disks: { runtime: disk('runtime', 'fakeloop0'), workload: disk('workload', 'fakeloop1') },
    images: [image],
    spec: {
      probe: { intervalSeconds: 0.05, timeoutSeconds: 0.1, failureThreshold: 2 },
      saturation: { utilization: 0.5, clearUtilization: 0.2, queueDepth: 64, clearQueueDepth: 32, windowSeconds: 0.3, sampleSeconds: 0.05, minFreeRatio: 0 },
      remediation: { policy: 'drain-then-restart', drainTimeoutSeconds: 5, cooldownSeconds: 600 },
      liveRestore: true,
      insecureRegistries: [],
    },
  };
  await mkdir(join(nodeDir, 'runtime'), { recursive: true });
  await mkdir(join(nodeDir, 'workload'), { recursive: true });
  await writeJsonAtomically(join(nodeDir, 'node.json'), record);
  return nodeDir;
}

test('the detectors\' condition transitions reach the status file and a test exporter alike', { timeout: 60_000 }, async () => {
  const node = await nodeDir('fan');
  const host = new FakeHost();
  const disks = new FakeDiskstats(join(node, 'diskstats'));
  await disks.start();
  const recorder = new RecordingExporter();
  const statusFile = new StatusFileExporter(node);
  const metrics = new PrometheusExporter('fan-n1');
  const server = await metrics.serve();
  const agent = new NodeAgent({
    nodeDir: node,
    host,
    exporters: [statusFile, new EventLogExporter(join(node, 'events.jsonl'), 'fan-n1'), metrics, recorder],
    pid: process.pid,
    metricsUrl: server.url,
    diskstatsPath: disks.path,
  });
  const running = agent.run();
  /** The file shows every condition as the test exporter last received it. */
  const fileAgrees = (what: string) =>
    waitFor(`status.json to show ${what}`, 10_000, async () => {
      const conditions = (await readNodeStatus(node))?.conditions;
      try {
        assert.deepEqual(conditions, recorder.current());
        return true;
      } catch {
        return false;
      }
    });
  try {
    await waitFor('Ready', 10_000, async () => recorder.phases.at(-1) === 'Ready');
    await fileAgrees('the runtime healthy');

    host.runtime.hung = true;
    await waitFor('RuntimeUnhealthy', 10_000, async () => recorder.last('RuntimeUnhealthy')?.status === 'True');
    await fileAgrees('the runtime hung');
    assert.equal((await readNodeStatus(node))?.phase, 'Draining', 'the restart waits for the test: the node is still draining');
    host.letRestart();
    await waitFor('Ready after the restart', 10_000, async () => recorder.last('RuntimeUnhealthy')?.status === 'False' && recorder.phases.at(-1) === 'Ready');
    await fileAgrees('the runtime restarted');

    disks.busy.workload = true;
    await waitFor('WorkloadDiskSaturated', 10_000, async () => recorder.last('WorkloadDiskSaturated')?.status === 'True');
    await fileAgrees('the workload disk saturated');
    disks.busy.workload = false;
    await waitFor('WorkloadDiskSaturated to clear', 10_000, async () => recorder.last('WorkloadDiskSaturated')?.status === 'False');
    await fileAgrees('the workload disk calm');

    const series = await (await fetch(server.url)).text();
    for (const expected of [
      /buildfleet_runtime_probe_failures_total\{node="fan-n1"\} [2-9]\d*/,
      /buildfleet_disk_saturated\{node="fan-n1",disk="workload"\} 0/,
      /buildfleet_disk_utilization_ratio\{node="fan-n1",disk="runtime"\} 0/,
      /buildfleet_node_state\{node="fan-n1",phase="Ready"\} 1/,
      /buildfleet_image_pull_duration_seconds_count\{node="fan-n1",image="registry.test\/ci\/build:1"\} 2/,
      /buildfleet_remediation_actions_total\{node="fan-n1",action="restart"\} 1/,
    ]) {
      assert.match(series, expected);
    }
  } finally {
    agent.stop();
    await running;
    disks.stop();
    await server.close();
  }

  assert.deepEqual(
    recorder.transitions.map((t) => [t.type, t.status, t.reason]),
    [
      ['RuntimeUnhealthy', 'False', 'ProbeAnswered'],
      ['PrePullFailed', 'False', 'ImagesPresent'],
      ['RuntimeUnhealthy', 'True', 'RuntimeHung'],
      ['RuntimeUnhealthy', 'False', 'RuntimeRestarted'],
      ['WorkloadDiskSaturated', 'True', 'DiskBusy'],
      ['WorkloadDiskSaturated', 'False', 'DiskCalm'],
    ],
  );
  assert.match(recorder.last('RuntimeUnhealthy')!.message, /restarted/);
  assert.match(recorder.transitions[2]!.message, /no answer within 100 ms/);
  const status = (await readNodeStatus(node))!;
  assert.deepEqual(status.conditions, recorder.current(), 'the file holds the last transition of each condition');
  assert.deepEqual(status.transitions.map((t) => t.phase), ['Provisioning', 'RuntimeReady', 'Pulling', 'Ready', 'Unhealthy', 'Cordoned', 'Draining', 'RuntimeReady', 'Pulling', 'Ready']);
  assert.deepEqual(recorder.phases, ['RuntimeReady', 'Pulling', 'Ready', 'Unhealthy', 'Cordoned', 'Draining', 'RuntimeReady', 'Pulling', 'Ready']);
  // The fake runtime holds the image already: verified, nothing downloaded.
  assert.deepEqual(status.images, [{ pinned: image.pinned, present: true, pullMs: status.images[0]!.pullMs, downloadMs: 0, downloadedBytes: 0 }]);
  assert.equal(status.agentPid, process.pid);
  assert.equal(status.metricsUrl, server.url);
  assert.equal(host.restarts, 1);
  assert.ok(host.stopped, 'the host stopped with the agent');

  const events = (await readFile(join(node, 'events.jsonl'), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { event: string; node: string; disk?: string; stillRunning?: number });
  assert.ok(events.every((e) => e.node === 'fan-n1'));
  const names = events.map((e) => e.event);
  for (const name of ['agent-started', 'pull-started', 'pull-done', 'probe-failed', 'drained', 'runtime-restart', 'image-verified', 'agent-stopped']) assert.ok(names.includes(name), `events.jsonl has ${name}`);
  assert.deepEqual(events.filter((e) => e.event.startsWith('disk-')).map((e) => [e.event, e.disk]), [['disk-saturated', 'workload'], ['disk-calm', 'workload']]);
  assert.equal(events.find((e) => e.event === 'drained')?.stillRunning, 0);
});

test('fan-out: an exporter that fails to publish a status is reported, and the others still publish it', async () => {
  const received: string[] = [];
  const fanOut = new FanOut([
    { statusChanged: () => Promise.reject(new Error('disk full')) },
    { statusChanged: (status) => void received.push(`status ${status.phase}`), event: (name, fields) => void received.push(`${name} ${JSON.stringify(fields)}`) },
  ]);
  const status: NodeStatus = { phase: 'Ready', transitions: [], conditions: {}, images: [], updatedAt: new Date().toISOString() };
  await fanOut.statusChanged(status);
  assert.deepEqual(received, ['status Ready', 'status-write-failed {"error":"disk full"}']);
});
