import { existsSync } from 'node:fs';
import { rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, destination, stdTimeFunctions, type Logger } from 'pino';
import { transition, type NodePhase } from '../state/lifecycle.js';
import { nodePaths, readNodeRecord, resolveNodeDir, readNodeStatus, writeNodeStatus, type NodePaths, type NodeRecord, type NodeStatus } from '../state/store.js';
import { NodeRuntime } from '../local/runtime.js';
import { joinCgroup, nodeCgroupName, nodeDaemonsCgroupName, runningContainers } from '../local/cgroups.js';
import { AgentMetrics } from './metrics.js';
import { HangDetector, probeRuntime } from './probe.js';
import { DiskMonitor } from './disk-watch.js';
import { imagePresent, pullImage } from './prepull.js';

/**
 * One agent per node (`buildfleet agent run --node-dir DIR`): it runs the node's runtime,
 * pre-pulls the images and holds the node out of Ready until they are there, probes the
 * runtime, watches both disks, remediates a hung runtime without killing builds, and serves
 * /metrics. It is the only writer of the node's status.json; every action is an event in
 * events.jsonl.
 */
export class NodeAgent {
  private readonly paths: NodePaths;
  private node!: NodeRecord;
  private status!: NodeStatus;
  private runtime!: NodeRuntime;
  private events!: Logger;
  private metrics!: AgentMetrics;
  private detector!: HangDetector;
  private disks!: DiskMonitor;
  private statusWrites: Promise<void> = Promise.resolve();
  private readonly stopping = new AbortController();
  private remediating = false;
  private pulling: Promise<void> | undefined;
  private lastRestartAt: number | undefined;
  private suppressedLogged = false;
  private recordModified: number | undefined;

  constructor(nodeDir: string) {
    this.paths = nodePaths(nodeDir);
  }

  get name(): string {
    return this.node?.name ?? basename(this.paths.dir);
  }

  /** Runs until stop() (SIGTERM): start-up, then the probe and disk loops. */
  async run(): Promise<void> {
    this.node = await readNodeRecord(this.paths.dir);
    // Before anything starts: every process of the node is then found (and only those) by its cgroup.
    await joinCgroup(nodeDaemonsCgroupName(this.paths.dir), process.pid);
    this.events = pino({ base: { node: this.node.name }, timestamp: stdTimeFunctions.isoTime }, destination({ dest: this.paths.events, sync: true, mkdir: true }));
    this.metrics = new AgentMetrics(this.node.name);
    this.detector = new HangDetector(this.node.spec.remediation.policy === 'kill-on-first-failure' ? 1 : this.node.spec.probe.failureThreshold);
    this.status = (await readNodeStatus(this.paths.dir)) ?? { phase: 'Provisioning', transitions: transition([], 'Provisioning', new Date()), conditions: {}, images: [], updatedAt: new Date().toISOString() };
    const server = await this.metrics.serve();
    // Atomic: the manager takes the pidfile's appearance as "the agent runs" and reads it at once.
    await writeFile(`${this.paths.agentPid}.tmp`, `${process.pid}\n`);
    await rename(`${this.paths.agentPid}.tmp`, this.paths.agentPid);
    this.status.agentPid = process.pid;
    this.status.metricsUrl = server.url;
    this.event('agent-started', { pid: process.pid, metrics: server.url });
    this.runtime = new NodeRuntime(this.paths, this.node);
    this.disks = this.diskMonitor();
    try {
      await this.runtime.start();
      this.setPhase('RuntimeReady', 'containerd and dockerd answer');
      this.setCondition('RuntimeHealthy', true, 'probe answered');
      await Promise.all([this.probeLoop(), this.diskLoop(), this.ensureImages()]);
      await this.untilStopped();
    } finally {
      await server.close();
      await this.runtime.stop().catch(() => {});
      await rm(this.paths.agentPid, { force: true });
      this.event('agent-stopped', {});
      await this.save();
    }
  }

  stop(): void {
    this.stopping.abort();
  }

  private diskMonitor(): DiskMonitor {
    return new DiskMonitor(this.node, this.metrics, (disk, saturated, reason) => {
      const key = disk === 'runtime' ? 'RuntimeDiskSaturated' : 'WorkloadDiskSaturated';
      this.status.conditions[key] = { status: saturated, since: new Date().toISOString(), ...(reason && { reason }) };
      this.event(saturated ? 'disk-saturated' : 'disk-calm', { disk, reason });
      this.save();
    });
  }

  private async untilStopped(): Promise<void> {
    if (this.stopping.signal.aborted) return;
    await new Promise((resolve) => this.stopping.signal.addEventListener('abort', resolve, { once: true }));
  }

  private event(event: string, fields: Record<string, unknown>): void {
    this.events.info({ event, ...fields });
  }

  private setPhase(phase: NodePhase, reason: string): void {
    const from = this.status.phase;
    if (from === phase) return;
    this.status.transitions = transition(this.status.transitions, phase, new Date(), reason);
    this.status.phase = phase;
    this.metrics.setPhase(phase);
    this.event('phase', { from, to: phase, reason });
    this.save();
  }

  private setCondition(name: 'RuntimeHealthy', status: boolean, reason: string): void {
    const current = this.status.conditions[name];
    if (current?.status === status) return;
    this.status.conditions[name] = { status, since: new Date().toISOString(), reason };
    this.save();
  }

  /** Serialised writes: the last state always lands, never two renames racing. */
  private save(): Promise<void> {
    this.statusWrites = this.statusWrites.then(() => {
      this.status.updatedAt = new Date().toISOString();
      return writeNodeStatus(this.paths.dir, this.status);
    }).catch((err: Error) => this.event('status-write-failed', { error: err.message }));
    return this.statusWrites;
  }

  /** Pulling until every image is present by digest, then Ready (unless something else holds the node). */
  private ensureImages(): Promise<void> {
    // One verification at a time: a probe that recovers while a pull runs must not start another.
    this.pulling ??= this.verifyImages().finally(() => {
      this.pulling = undefined;
    });
    return this.pulling;
  }

  private async verifyImages(): Promise<void> {
    this.setPhase('Pulling', this.node.images.length ? `verifying ${this.node.images.length} image(s)` : 'no images to pre-pull');
    this.status.images = this.node.images.map((image) => ({ pinned: image.pinned, present: false }));
    for (const [i, image] of this.node.images.entries()) {
      for (let attempt = 1; !this.stopping.signal.aborted; attempt++) {
        const started = performance.now();
        try {
          const present = await imagePresent(this.runtime.docker, image);
          if (!present) {
            this.event('pull-started', { image: image.pinned, attempt });
            await pullImage(this.runtime.docker, image, this.stopping.signal);
          }
          const seconds = (performance.now() - started) / 1000;
          this.metrics.pullDuration.observe({ node: this.node.name, image: image.reference }, seconds);
          this.status.images[i] = { pinned: image.pinned, present: true, pullMs: Math.round(seconds * 1000) };
          this.event(present ? 'image-verified' : 'pull-done', { image: image.pinned, ms: Math.round(seconds * 1000) });
          this.save();
          break;
        } catch (err) {
          if (this.stopping.signal.aborted) return;
          const error = (err as Error).message.split('\n')[0]!;
          this.status.images[i] = { pinned: image.pinned, present: false, error };
          this.event('pull-failed', { image: image.pinned, attempt, error });
          this.save();
          await sleep(Math.min(30_000, 500 * 2 ** attempt), undefined, { signal: this.stopping.signal }).catch(() => {});
        }
      }
    }
    if (this.stopping.signal.aborted || this.remediating || this.detector.hung) return;
    this.setPhase('Ready', 'every image present by digest');
  }

  private async probeLoop(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      await this.reloadIfChanged().catch((err: Error) => this.event('reload-failed', { error: err.message }));
      const { intervalSeconds, timeoutSeconds } = this.node.spec.probe;
      const result = await probeRuntime(this.runtime.docker, timeoutSeconds * 1000);
      this.metrics.probeLatency.observe({ node: this.node.name }, result.latencyMs / 1000);
      if (!result.ok) this.metrics.probeFailures.inc({ node: this.node.name });
      const hung = this.detector.record(result.ok);
      if (!result.ok) this.event('probe-failed', { error: result.error, ms: Math.round(result.latencyMs), consecutive: this.detector.consecutiveFailures });
      if (hung && !this.remediating) void this.remediate(result.error ?? 'probe failed');
      if (result.ok && !this.remediating && this.status.phase === 'Unhealthy') {
        // Recovered without a restart (policy none, or a restart held back by the cooldown).
        this.setCondition('RuntimeHealthy', true, 'probe answers again');
        void this.ensureImages();
      }
      await sleep(intervalSeconds * 1000, undefined, { signal: this.stopping.signal }).catch(() => {});
    }
  }

  /**
   * `pool apply` rewrites node.json when images or thresholds change: take the new settings, and
   * verify (or pull) the new images before the node takes jobs again.
   */
  private async reloadIfChanged(): Promise<void> {
    const modified = (await stat(this.paths.record)).mtimeMs;
    if (modified === this.recordModified) return;
    const first = this.recordModified === undefined;
    this.recordModified = modified;
    if (first) return;
    const previous = this.node;
    this.node = await readNodeRecord(this.paths.dir);
    this.detector = new HangDetector(this.node.spec.remediation.policy === 'kill-on-first-failure' ? 1 : this.node.spec.probe.failureThreshold);
    this.disks = this.diskMonitor();
    const imagesChanged = JSON.stringify(previous.images) !== JSON.stringify(this.node.images);
    this.event('settings-reloaded', { imagesChanged });
    if (imagesChanged && !this.remediating) void this.ensureImages();
  }

  private async diskLoop(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      await this.disks.sample().catch((err: Error) => this.event('disk-sample-failed', { error: err.message }));
      await sleep(this.node.spec.saturation.sampleSeconds * 1000, undefined, { signal: this.stopping.signal }).catch(() => {});
    }
  }

  /**
   * A hung runtime: cordon, let running builds finish (up to the deadline), restart dockerd
   * (live-restore keeps any build still running), verify the images, uncordon. At most one
   * restart per cooldown: a runtime that hangs again soon stays Unhealthy instead of looping.
   */
  private async remediate(reason: string): Promise<void> {
    const { policy, drainTimeoutSeconds, cooldownSeconds } = this.node.spec.remediation;
    this.remediating = true;
    try {
      this.setCondition('RuntimeHealthy', false, reason);
      this.setPhase('Unhealthy', `runtime probe: ${reason} (${this.detector.consecutiveFailures} in a row)`);
      if (policy === 'none') return;
      if (this.lastRestartAt !== undefined && Date.now() - this.lastRestartAt < cooldownSeconds * 1000) {
        if (!this.suppressedLogged) this.event('restart-suppressed', { reason: 'cooldown', until: new Date(this.lastRestartAt + cooldownSeconds * 1000).toISOString() });
        this.suppressedLogged = true;
        this.metrics.remediations.inc({ node: this.node.name, action: 'suppressed' });
        return;
      }
      this.suppressedLogged = false;
      if (policy === 'drain-then-restart') {
        this.setPhase('Cordoned', 'remediation: no new jobs');
        this.metrics.remediations.inc({ node: this.node.name, action: 'cordon' });
        this.setPhase('Draining', `waiting up to ${drainTimeoutSeconds} s for running builds`);
        const left = await this.drain(drainTimeoutSeconds * 1000);
        this.event('drained', { stillRunning: left.length });
      }
      this.event('runtime-restart', { policy, liveRestore: this.node.spec.liveRestore });
      this.metrics.remediations.inc({ node: this.node.name, action: 'restart' });
      this.lastRestartAt = Date.now();
      this.status.lastRestartAt = new Date(this.lastRestartAt).toISOString();
      await this.runtime.restartDockerd();
      this.detector.record(true);
      this.setCondition('RuntimeHealthy', true, 'restarted');
      if (policy === 'drain-then-restart') this.setPhase('RuntimeReady', 'dockerd restarted');
      // Done remediating before the images are verified: verification holds back Ready while it is set.
      this.remediating = false;
      await this.ensureImages();
    } catch (err) {
      this.event('remediation-failed', { error: (err as Error).message.split('\n')[0] });
    } finally {
      this.remediating = false;
    }
  }

  /** Waits for the node's containers to exit, read from their cgroups (dockerd may be hung). */
  private async drain(timeoutMs: number): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const cgroup = nodeCgroupName(this.paths.dir);
    for (;;) {
      const running = await runningContainers(cgroup);
      if (running.length === 0 || Date.now() >= deadline || this.stopping.signal.aborted) return running;
      await sleep(Math.min(500, Math.max(50, deadline - Date.now())));
    }
  }
}

/** The CLI's entry: runs an agent until SIGTERM or SIGINT. */
export async function runAgent(given: string): Promise<void> {
  // Only a real node dir of a state dir: the agent mounts, kills and removes below it.
  const agent = new NodeAgent(await resolveNodeDir(given));
  const stop = () => agent.stop();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // A daemon outlives terminals: a hang-up is no reason to leave the node unwatched.
  process.on('SIGHUP', () => {});
  await agent.run();
}
