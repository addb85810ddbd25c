import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import type { KubeConfig, V1Node } from '@kubernetes/client-node';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { ContainerRuntime } from '../nodepool/runtime/container-runtime.js';
import type { DetectorSink, EventFields, Problem } from '../nodepool/agent/problems.js';
import { probeRuntime, RUNTIME_UNHEALTHY, RuntimeProbeDetector } from '../nodepool/agent/detectors/runtime-probe.js';
import { DiskSaturationDetector } from '../nodepool/agent/detectors/disk-detector.js';
import type { InClusterSettings } from './in-cluster-settings.js';
import { KubeClusterNodes } from './cluster-nodes.js';
import { NodeConditionWriter } from './node-conditions.js';
import { NodeInformer } from './node-informer.js';
import { drainThenRestart } from './remediation.js';
import { StartupTaintRemover } from './startup-taint.js';
import { watchedDisks } from './node-disks.js';

/**
 * The node agent as a Kubernetes DaemonSet pod (`buildfleet agent run --in-cluster`): the same
 * detectors as a local node's agent (runtime probe with hang counting, disk saturation), their
 * problems written as NodeConditions with Events, the startup taint removed once the build
 * image's digest is in node.status.images and the runtime answers, and a hung runtime
 * remediated through the API: cordon, evict within budgets up to the deadline, restart (the
 * settings' command: the runtime belongs to the node, not to us), uncordon once it answers.
 * It starts no runtime: it connects to the node's.
 */

export type InClusterAgentOptions = {
  settings: InClusterSettings;
  config: KubeConfig;
  runtime: ContainerRuntime;
  /** One line per happening (stderr by default: kubectl logs shows it). */
  log?: (line: string) => void;
  /** How long a restarted runtime has to answer before the node is left cordoned. */
  restartWaitMs?: number;
  /** Between eviction rounds while budgets refuse. */
  evictionBackoff?: { initialMs: number; maxMs: number };
  /**
   * Pins the build image (by its manifest digest) so kubelet's image GC keeps it; returns the
   * names pinned. Given for containerd (the `io.cri-containerd.pinned` label); called once the
   * runtime holds the image, retried at each probe until it succeeds.
   */
  pinBuildImage?: (digest: string) => Promise<string[]>;
};

export class InClusterAgent {
  private readonly settings: InClusterSettings;
  private readonly stopping = new AbortController();
  private readonly conditions: NodeConditionWriter;
  private readonly taint: StartupTaintRemover | undefined;
  private readonly nodes: KubeClusterNodes;
  private readonly probe: RuntimeProbeDetector;
  private readonly sink: DetectorSink;
  private readonly log: (line: string) => void;
  /** undefined until the first probe answered or failed for good. */
  private healthy: boolean | undefined;
  private reportedUnhealthy = false;
  private remediating = false;
  private lastRestartAt: number | undefined;
  private taintRemoved = false;
  private pinned = false;
  private pinError: string | undefined;
  private taintChecks: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: InClusterAgentOptions) {
    const { settings, config } = options;
    this.settings = settings;
    this.log = options.log ?? ((line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`));
    this.conditions = new NodeConditionWriter(config, settings.nodeName);
    this.taint = settings.buildImage && new StartupTaintRemover(config, { nodeName: settings.nodeName, taintKey: settings.startupTaintKey, digest: settings.buildImage.digest });
    this.nodes = new KubeClusterNodes(config, { log: (line) => this.log(line), ...(options.evictionBackoff && { backoff: options.evictionBackoff }) });
    this.sink = {
      problem: (problem) => void this.report(problem),
      event: (name, fields) => this.event(name, fields),
      observe: () => {},
    };
    this.probe = new RuntimeProbeDetector(options.runtime, settings.probe.failureThreshold, this.sink);
  }

  /** Runs until stop(): the node informer (startup taint), the probe loop and the disk loop. */
  async run(): Promise<void> {
    const { nodeName } = this.settings;
    this.event('agent-started', { node: nodeName, runtime: this.settings.runtime, socket: this.settings.runtimeSocket });
    const informer = new NodeInformer(this.options.config, {
      fieldSelector: `metadata.name=${nodeName}`,
      onNode: (node) => this.checkTaint(node),
      onError: (err, retryInMs) => this.event('node-watch-failed', { error: (err as Error).message, retryInMs }),
    });
    if (this.taint) await informer.start();
    try {
      await Promise.all([this.probeLoop(), this.diskLoop()]);
    } finally {
      await informer.stop();
      await this.taintChecks;
      this.event('agent-stopped', {});
    }
  }

  stop(): void {
    this.stopping.abort();
  }

  private event(name: string, fields: EventFields): void {
    this.log(`${name} ${JSON.stringify(fields)}`);
  }

  /** Conditions go out one after another (the writer queues them); a failure is logged, and the next report carries the state again. */
  private async report(problem: Problem): Promise<void> {
    try {
      await this.conditions.report([problem]);
    } catch (err) {
      this.event('condition-write-failed', { type: problem.type, error: (err as Error).message });
    }
  }

  /** Serialised, and a no-op once the taint is gone; `node` is the informer's copy when it has one. */
  private checkTaint(node?: V1Node): void {
    const taint = this.taint;
    if (!taint || this.taintRemoved) return;
    this.taintChecks = this.taintChecks.then(async () => {
      if (this.taintRemoved || this.stopping.signal.aborted) return;
      try {
        const result = await taint.check(this.healthy === true && !this.remediating, node);
        if (result.removed) {
          this.taintRemoved = true;
          this.event('startup-taint-removed', { key: this.settings.startupTaintKey, digest: this.settings.buildImage?.digest });
        }
      } catch (err) {
        this.event('startup-taint-failed', { error: (err as Error).message });
      }
    });
  }

  private async probeLoop(): Promise<void> {
    const { intervalSeconds, timeoutSeconds } = this.settings.probe;
    while (!this.stopping.signal.aborted) {
      const result = await this.probe.probe(timeoutSeconds * 1000);
      if (result.ok && !this.remediating && this.healthy !== true) {
        this.healthy = true;
        await this.report({ type: RUNTIME_UNHEALTHY, present: false, reason: this.reportedUnhealthy ? 'ProbeAnswersAgain' : 'ProbeAnswered', message: `probe answered in ${Math.round(result.latencyMs)} ms` });
        this.reportedUnhealthy = false;
        this.checkTaint();
      }
      if (result.ok && !this.remediating) await this.pinIfPresent();
      if (result.hung && !this.remediating) void this.remediate(result.error ?? 'probe failed');
      await sleep(intervalSeconds * 1000, undefined, { signal: this.stopping.signal }).catch(() => {});
    }
  }

  /** Pins the build image once the runtime holds it by digest; an error is logged once per distinct message and retried at the next probe. */
  private async pinIfPresent(): Promise<void> {
    const { buildImage } = this.settings;
    const pin = this.options.pinBuildImage;
    if (this.pinned || !buildImage || !pin) return;
    try {
      if (!(await this.options.runtime.hasImage({ pinned: buildImage.reference, digest: buildImage.digest }))) return;
      const names = await pin(buildImage.digest);
      this.pinned = true;
      this.event('image-pinned', { digest: buildImage.digest, names });
    } catch (err) {
      const message = (err as Error).message.split('\n')[0];
      if (message !== this.pinError) this.event('image-pin-failed', { digest: buildImage.digest, error: message });
      this.pinError = message;
    }
  }

  private async diskLoop(): Promise<void> {
    const { disks, missing } = await watchedDisks(this.settings.disks, this.settings.diskstatsPath).catch((err: Error) => ({ disks: [], missing: [err.message] }));
    if (missing.length) this.event('disks-not-watched', { disks: missing });
    if (disks.length === 0) return;
    const { saturation } = this.settings;
    const detector = new DiskSaturationDetector({ disks, thresholds: saturation, windowMs: saturation.windowSeconds * 1000, diskstatsPath: this.settings.diskstatsPath }, this.sink);
    while (!this.stopping.signal.aborted) {
      await detector.sample().catch((err: Error) => this.event('disk-sample-failed', { error: err.message }));
      await sleep(saturation.sampleSeconds * 1000, undefined, { signal: this.stopping.signal }).catch(() => {});
    }
  }

  /** A hung runtime: condition True, then cordon, drain, restart, uncordon; at most one restart per cooldown (a node that hangs again soon stays cordoned and True). */
  private async remediate(error: string): Promise<void> {
    this.remediating = true;
    this.healthy = false;
    try {
      const message = `${error} (${this.probe.hang.consecutiveFailures} probes in a row)`;
      if (!this.reportedUnhealthy) await this.report({ type: RUNTIME_UNHEALTHY, present: true, reason: 'RuntimeHung', message });
      this.reportedUnhealthy = true;
      const { cooldownSeconds, drainDeadlineSeconds } = this.settings.remediation;
      if (this.lastRestartAt !== undefined && Date.now() - this.lastRestartAt < cooldownSeconds * 1000) return;
      const steps = await drainThenRestart(this.nodes, {
        node: this.settings.nodeName,
        reason: `${RUNTIME_UNHEALTHY}: ${message}`,
        deadlineSeconds: drainDeadlineSeconds,
        restartRuntime: () => this.restartRuntime(),
        runtimeHealthy: async () => (await probeRuntime(this.options.runtime, this.settings.probe.timeoutSeconds * 1000)).ok,
        log: (line) => this.log(line),
      });
      if (steps.includes('uncordoned')) {
        this.probe.hang.record(true);
        this.healthy = true;
        this.reportedUnhealthy = false;
        await this.report({ type: RUNTIME_UNHEALTHY, present: false, reason: 'RuntimeRestarted', message: 'the runtime answers after its restart' });
      }
    } catch (err) {
      this.event('remediation-failed', { error: (err as Error).message.split('\n')[0] });
    } finally {
      this.remediating = false;
    }
  }

  /** Runs the restart command, then waits for the runtime to answer (bounded): runtimeHealthy asks once right after. */
  private async restartRuntime(): Promise<void> {
    this.lastRestartAt = Date.now();
    const result = await execa('sh', ['-c', this.settings.restartCommand], { reject: false, timeout: 120_000 });
    if (result.exitCode !== 0) throw new BuildfleetError('environment', `restart the runtime (${this.settings.restartCommand}): exit ${result.exitCode ?? result.signal}: ${(result.stderr || result.stdout).trim().split('\n').pop() ?? ''}`);
    const deadline = Date.now() + (this.options.restartWaitMs ?? 60_000);
    while (Date.now() < deadline && !this.stopping.signal.aborted) {
      if ((await probeRuntime(this.options.runtime, 2000)).ok) return;
      await sleep(500);
    }
  }
}
