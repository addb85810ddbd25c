import type { ContainerRuntime } from '../../runtime/container-runtime.js';
import type { DetectorSink } from '../problems.js';

/**
 * The runtime health probe: what `docker ps` asks (list containers), through the runtime's
 * API, under a timeout. One slow answer is not a hang: the runtime counts as hung only after
 * `failureThreshold` consecutive failures (the field's monitor kills it on the first).
 */

export type ProbeResult = { ok: boolean; latencyMs: number; error?: string; containers?: Array<{ id: string; labels: Record<string, string> }> };

export async function probeRuntime(runtime: ContainerRuntime, timeoutMs: number): Promise<ProbeResult> {
  const started = performance.now();
  try {
    const containers = await runtime.listContainers({ signal: AbortSignal.timeout(timeoutMs) });
    return { ok: true, latencyMs: performance.now() - started, containers };
  } catch (err) {
    const latencyMs = performance.now() - started;
    const name = (err as Error).name;
    const error = name === 'TimeoutError' || name === 'AbortError' ? `no answer within ${timeoutMs} ms` : (err as Error).message.split('\n')[0]!;
    return { ok: false, latencyMs, error };
  }
}

/** Consecutive-failure counting, pure. */
export class HangDetector {
  private failures = 0;

  constructor(private readonly failureThreshold: number) {}

  /** Feeds one probe result; returns whether the runtime now counts as hung. */
  record(ok: boolean): boolean {
    this.failures = ok ? 0 : this.failures + 1;
    return this.hung;
  }

  get hung(): boolean {
    return this.failures >= this.failureThreshold;
  }

  get consecutiveFailures(): number {
    return this.failures;
  }
}

/** The condition the agent sets while the runtime counts as hung (and its remediation runs). */
export const RUNTIME_UNHEALTHY = 'RuntimeUnhealthy';

/**
 * The probe as a detector: each probe is an observation (and a `probe-failed` event when it
 * fails); the verdict "hung" is the agent's to act on, by its remediation policy.
 */
export class RuntimeProbeDetector {
  readonly hang: HangDetector;

  constructor(
    private readonly runtime: ContainerRuntime,
    failureThreshold: number,
    private readonly sink: DetectorSink,
  ) {
    this.hang = new HangDetector(failureThreshold);
  }

  async probe(timeoutMs: number): Promise<ProbeResult & { hung: boolean }> {
    const result = await probeRuntime(this.runtime, timeoutMs);
    this.sink.observe({ kind: 'probe', ok: result.ok, latencyMs: result.latencyMs });
    const hung = this.hang.record(result.ok);
    if (!result.ok) this.sink.event('probe-failed', { error: result.error, ms: Math.round(result.latencyMs), consecutive: this.hang.consecutiveFailures });
    return { ...result, hung };
  }
}
