import type Docker from 'dockerode';

/**
 * The runtime health probe: what `docker ps` asks (list containers), through the Docker API,
 * under a timeout. One slow answer is not a hang: the runtime counts as hung only after
 * `failureThreshold` consecutive failures (the field's monitor kills it on the first).
 */

export type ProbeResult = { ok: boolean; latencyMs: number; error?: string; containers?: Array<{ id: string; labels: Record<string, string> }> };

export async function probeRuntime(docker: Docker, timeoutMs: number): Promise<ProbeResult> {
  const started = performance.now();
  try {
    const list = await docker.listContainers({ abortSignal: AbortSignal.timeout(timeoutMs) } as Docker.ContainerListOptions);
    return { ok: true, latencyMs: performance.now() - started, containers: list.map((c) => ({ id: c.Id, labels: c.Labels ?? {} })) };
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
