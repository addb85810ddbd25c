import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { transition, type NodePhase } from '../state/lifecycle.js';
import { nodePaths, readNodeRecord, type NodeCondition, type NodePaths, type NodeRecord, type NodeStatus } from '../state/store.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import type { RuntimeHost } from '../runtime/host.js';
import { FanOut, type Exporter } from './exporter.js';
import type { DetectorSink, EventFields, Observation, Problem } from './problems.js';
import { RUNTIME_UNHEALTHY, RuntimeProbeDetector } from './detectors/runtime-probe.js';
import { DiskSaturationDetector } from './detectors/disk-detector.js';
import { PrePullDetector } from './detectors/prepull.js';
import type { RuntimeImageStore } from '../runtime/host.js';
import type { ResumePolicy } from '../prepull/blob-fetch.js';
import type { SharedBlobCache } from '../prepull/blob-cache.js';

export type NodeAgentOptions = {
  /** The node dir: node.json (settings, reloaded when `pool apply` rewrites it). */
  nodeDir: string;
  host: RuntimeHost;
  exporters: readonly Exporter[];
  /** The status to carry on from (the manager's Provisioning, or an earlier agent's); a fresh one without. */
  status?: NodeStatus;
  /** Recorded in the status and the `agent-started` event. */
  pid?: number;
  metricsUrl?: string;
  /** How the direct pre-pull resumes broken downloads (tests make it quick). */
  resume?: ResumePolicy;
  /** The host's blob cache, shared by the nodes the direct pre-pull runs on. */
  blobCache?: SharedBlobCache;
  /** /proc/diskstats, unless a test gives its own. */
  diskstatsPath?: string;
};

/**
 * One agent per node: it runs the node's runtime (through its host), pre-pulls the images and
 * holds the node out of Ready until they are there, probes the runtime, watches both disks, and
 * remediates a hung runtime without killing builds. The detectors find; the agent keeps the
 * node's phase and conditions and acts; the exporters publish (status file, events, metrics).
 */
export class NodeAgent {
  private readonly paths: NodePaths;
  private readonly out: FanOut;
  private readonly sink: DetectorSink;
  private node!: NodeRecord;
  private status: NodeStatus;
  private runtime!: ContainerRuntime;
  private probe!: RuntimeProbeDetector;
  private disks!: DiskSaturationDetector;
  private prePull!: PrePullDetector;
  private readonly stopping = new AbortController();
  private remediating = false;
  private pulling: Promise<void> | undefined;
  private lastRestartAt: number | undefined;
  private suppressedLogged = false;
  private recordModified: number | undefined;

  constructor(private readonly options: NodeAgentOptions) {
    this.paths = nodePaths(options.nodeDir);
    this.out = new FanOut(options.exporters);
    this.status = options.status ?? { phase: 'Provisioning', transitions: transition([], 'Provisioning', new Date()), conditions: {}, images: [], updatedAt: new Date().toISOString() };
    this.sink = {
      problem: (problem) => this.setCondition(problem),
      event: (name, fields) => this.event(name, fields),
      observe: (observation) => this.observe(observation),
    };
  }

  get name(): string {
    return this.node?.name ?? basename(this.paths.dir);
  }

  /** Runs until stop(): start-up, then the probe and disk loops. */
  async run(): Promise<void> {
    this.node = await readNodeRecord(this.paths.dir);
    const { pid, metricsUrl } = this.options;
    if (pid !== undefined) this.status.agentPid = pid;
    if (metricsUrl !== undefined) this.status.metricsUrl = metricsUrl;
    // The node is provisioned (disks made, agent running) from here; the runtime's start follows.
    this.status.agentStartedAt ??= new Date().toISOString();
    this.event('agent-started', { pid, metrics: metricsUrl });
    try {
      // The direct pre-pull writes the images before the runtime's first start only: later the runtime is running.
      const direct = this.node.spec.prepull?.mode === 'direct' && this.status.phase === 'Provisioning' && !this.status.install;
      const install = new AbortController();
      let installing: Promise<void> | undefined;
      try {
        this.runtime = await this.options.host.start(direct ? { beforeRuntime: (store) => (installing = this.installDirect(store, AbortSignal.any([this.stopping.signal, install.signal]))) } : {});
      } catch (err) {
        // The runtime did not come up: the install must not go on writing into its store behind us.
        install.abort();
        await installing;
        throw err;
      }
      this.probe = this.probeDetector();
      this.disks = this.diskDetector();
      this.prePull = new PrePullDetector(this.runtime, this.sink);
      this.setPhase('RuntimeReady', `${this.options.host.names.started} answer`);
      this.setCondition({ type: RUNTIME_UNHEALTHY, present: false, reason: 'ProbeAnswered', message: 'probe answered' });
      await Promise.all([this.probeLoop(), this.diskLoop(), this.ensureImages()]);
      await this.untilStopped();
    } finally {
      await this.options.host.stop().catch(() => {});
      this.event('agent-stopped', {});
      await this.save();
    }
  }

  stop(): void {
    this.stopping.abort();
  }

  private probeDetector(): RuntimeProbeDetector {
    const { remediation, probe } = this.node.spec;
    return new RuntimeProbeDetector(this.runtime, remediation.policy === 'kill-on-first-failure' ? 1 : probe.failureThreshold, this.sink);
  }

  private diskDetector(): DiskSaturationDetector {
    const s = this.node.spec.saturation;
    const disks = (['runtime', 'workload'] as const).map((role) => ({
      name: role,
      device: basename(this.node.disks[role].loopDevice ?? ''),
      mountPoint: this.node.disks[role].mountPoint,
      ...(this.node.disks[role].budget && { budget: this.node.disks[role].budget }),
    }));
    return new DiskSaturationDetector({ disks, thresholds: s, windowMs: s.windowSeconds * 1000, diskstatsPath: this.options.diskstatsPath }, this.sink);
  }

  private async untilStopped(): Promise<void> {
    if (this.stopping.signal.aborted) return;
    await new Promise((resolve) => this.stopping.signal.addEventListener('abort', resolve, { once: true }));
  }

  private event(name: string, fields: EventFields): void {
    this.out.event(name, fields);
  }

  private observe(observation: Observation): void {
    this.out.observe(observation);
    if (observation.kind !== 'image') return;
    const { index, image } = observation;
    this.status.images[index] = observation.present
      ? {
          pinned: image.pinned,
          present: true,
          pullMs: Math.round(observation.seconds * 1000),
          ...(observation.downloadSeconds !== undefined && { downloadMs: Math.round(observation.downloadSeconds * 1000), downloadedBytes: observation.downloadedBytes }),
        }
      : { pinned: image.pinned, present: false, error: observation.error };
    this.save();
  }

  /** A condition's transition time changes only when its status does; a new reason (the same problem, another cause) is published with the old time. */
  private setCondition(problem: Problem): void {
    const status = problem.present ? 'True' : 'False';
    const current = this.status.conditions[problem.type];
    if (current?.status === status && current.reason === problem.reason) return;
    const lastTransitionTime = current?.status === status ? current.lastTransitionTime : new Date().toISOString();
    const condition: NodeCondition = { status, reason: problem.reason, message: problem.message, lastTransitionTime };
    this.status.conditions[problem.type] = condition;
    this.out.conditionChanged(problem.type, condition);
    this.save();
  }

  private setPhase(phase: NodePhase, reason: string): void {
    const from = this.status.phase;
    if (from === phase) return;
    this.status.transitions = transition(this.status.transitions, phase, new Date(), reason);
    this.status.phase = phase;
    this.event('phase', { from, to: phase, reason });
    this.save();
  }

  /** Every exporter sees the whole status after each change; never rejects. */
  private save(): Promise<void> {
    this.status.updatedAt = new Date().toISOString();
    return this.out.statusChanged(this.status);
  }

  private async installDirect(store: RuntimeImageStore, signal: AbortSignal): Promise<void> {
    try {
      // Loaded only by nodes that pre-pull directly: the registry client and the extractors are
      // most of the agent's code, and every node pays its loading in CPU at start-up.
      const { DirectPrePull } = await import('./detectors/direct-prepull.js');
      const marks = await new DirectPrePull(this.sink, { insecureRegistries: this.node.spec.insecureRegistries, ...(this.options.resume && { resume: this.options.resume }), ...(this.options.blobCache && { blobCache: this.options.blobCache }) }).install(this.node.images, store, signal);
      if (marks && !signal.aborted) {
        this.status.install = marks;
        await this.save();
      }
    } catch (err) {
      this.event('direct-pull-failed', { error: (err as Error).message.split('\n')[0] });
    }
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
    const { images } = this.node;
    this.setPhase('Pulling', images.length ? `verifying ${images.length} image(s)` : 'no images to pre-pull');
    this.status.images = images.map((image) => ({ pinned: image.pinned, present: false }));
    await this.prePull.ensure(images, this.stopping.signal);
    if (this.stopping.signal.aborted || this.remediating || this.probe.hang.hung) return;
    this.setPhase('Ready', 'every image present by digest');
  }

  private async probeLoop(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      await this.reloadIfChanged().catch((err: Error) => this.event('reload-failed', { error: err.message }));
      const { intervalSeconds, timeoutSeconds } = this.node.spec.probe;
      const result = await this.probe.probe(timeoutSeconds * 1000);
      if (result.hung && !this.remediating) void this.remediate(result.error ?? 'probe failed');
      if (result.ok && !this.remediating && this.status.phase === 'Unhealthy') {
        // Recovered without a restart (policy none, or a restart held back by the cooldown).
        this.setCondition({ type: RUNTIME_UNHEALTHY, present: false, reason: 'ProbeAnswersAgain', message: 'probe answers again' });
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
    this.probe = this.probeDetector();
    this.disks = this.diskDetector();
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
   * A hung runtime: cordon, let running builds finish (up to the deadline), restart the runtime
   * (live-restore keeps any build still running), verify the images, uncordon. At most one
   * restart per cooldown: a runtime that hangs again soon stays Unhealthy instead of looping.
   */
  private async remediate(error: string): Promise<void> {
    const { policy, drainTimeoutSeconds, cooldownSeconds } = this.node.spec.remediation;
    this.remediating = true;
    try {
      this.setCondition({ type: RUNTIME_UNHEALTHY, present: true, reason: 'RuntimeHung', message: error });
      this.setPhase('Unhealthy', `runtime probe: ${error} (${this.probe.hang.consecutiveFailures} in a row)`);
      if (policy === 'none') return;
      if (this.lastRestartAt !== undefined && Date.now() - this.lastRestartAt < cooldownSeconds * 1000) {
        if (!this.suppressedLogged) this.event('restart-suppressed', { reason: 'cooldown', until: new Date(this.lastRestartAt + cooldownSeconds * 1000).toISOString() });
        this.suppressedLogged = true;
        this.observe({ kind: 'remediation', action: 'suppressed' });
        return;
      }
      this.suppressedLogged = false;
      if (policy === 'drain-then-restart') {
        this.setPhase('Cordoned', 'remediation: no new jobs');
        this.observe({ kind: 'remediation', action: 'cordon' });
        this.setPhase('Draining', `waiting up to ${drainTimeoutSeconds} s for running builds`);
        const left = await this.drain(drainTimeoutSeconds * 1000);
        this.event('drained', { stillRunning: left.length });
      }
      this.event('runtime-restart', { policy, liveRestore: this.node.spec.liveRestore });
      this.observe({ kind: 'remediation', action: 'restart' });
      this.lastRestartAt = Date.now();
      this.status.lastRestartAt = new Date(this.lastRestartAt).toISOString();
      await this.options.host.restart();
      this.probe.hang.record(true);
      this.setCondition({ type: RUNTIME_UNHEALTHY, present: false, reason: 'RuntimeRestarted', message: 'restarted' });
      if (policy === 'drain-then-restart') this.setPhase('RuntimeReady', `${this.options.host.names.restarted} restarted`);
      // Done remediating before the images are verified: verification holds back Ready while it is set.
      this.remediating = false;
      await this.ensureImages();
    } catch (err) {
      this.event('remediation-failed', { error: (err as Error).message.split('\n')[0] });
    } finally {
      this.remediating = false;
    }
  }

  /** Waits for the node's workloads to exit, as the host sees them without the runtime (it may be hung). */
  private async drain(timeoutMs: number): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const running = await this.options.host.runningWorkloads();
      if (running.length === 0 || Date.now() >= deadline || this.stopping.signal.aborted) return running;
      await sleep(Math.min(500, Math.max(50, deadline - Date.now())));
    }
  }
}
