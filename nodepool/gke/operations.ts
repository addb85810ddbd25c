import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { GkeSpec } from '../pool-spec/pool-spec.js';
import type { GkeTransport } from './client.js';
import { apiFailureOf, gkeError, isOperationConflict, isTransient, statusName, type ApiFailure } from './errors.js';
import {
  clusterOf,
  getNodePoolRequest,
  listNodePoolsRequest,
  operationPath,
  targetOf,
  type GkeRequest,
  type MutatingRequest,
  type NodePool,
  type Operation,
} from './requests.js';

/**
 * Runs container.v1 requests the way GKE wants them run: a mutating call returns an Operation,
 * polled with backoff until DONE, its `error` surfaced as one line; one operation per cluster at
 * a time (serialised here, and a FAILED_PRECONDITION from someone else's operation retried with
 * backoff); quota and permission refusals named as such. Every call and every wait has a timeout.
 */

export type GkeOperationsOptions = {
  /** One HTTP call. */
  callTimeoutMs?: number;
  /** One operation, from the first send to DONE (node pool creation takes minutes). */
  operationTimeoutMs?: number;
  pollInitialMs?: number;
  pollMaxMs?: number;
  /** The first wait after FAILED_PRECONDITION or a transient failure; doubles up to retryMaxMs. */
  retryInitialMs?: number;
  retryMaxMs?: number;
  log?: (line: string) => void;
};

const DEFAULTS: Required<Omit<GkeOperationsOptions, 'log'>> = {
  callTimeoutMs: 60_000,
  operationTimeoutMs: 45 * 60_000,
  pollInitialMs: 1_000,
  pollMaxMs: 20_000,
  retryInitialMs: 5_000,
  retryMaxMs: 60_000,
};

const POLL_GROWTH = 1.5;

function seconds(ms: number): string {
  return (ms / 1000).toFixed(ms < 10_000 ? 1 : 0);
}

/** A refusal of the API, with what it said (a caller may treat NOT_FOUND as an answer). */
export class GkeApiError extends BuildfleetError {
  constructor(
    error: BuildfleetError,
    readonly failure: ApiFailure,
  ) {
    super(error.kind, error.message);
  }
}

export class GkeOperations {
  private readonly options: Required<Omit<GkeOperationsOptions, 'log'>>;
  private readonly log: (line: string) => void;
  /** The tail of each cluster's queue: a mutating call starts when the one before it is DONE. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(
    private readonly transport: GkeTransport,
    private readonly gke: Pick<GkeSpec, 'project' | 'location'>,
    options: GkeOperationsOptions = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
    this.log = options.log ?? (() => {});
  }

  /** Sends a mutating request after the cluster's previous one, and returns its Operation once DONE. */
  run(request: MutatingRequest): Promise<Operation> {
    const cluster = clusterOf(request);
    const previous = this.queues.get(cluster) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(() => this.runNow(request));
    this.queues.set(cluster, next);
    void next.finally(() => {
      if (this.queues.get(cluster) === next) this.queues.delete(cluster);
    }).catch(() => {});
    return next;
  }

  /** The node pool, or undefined when the cluster has none of that name (a missing cluster is an error). */
  async getNodePool(gke: GkeSpec, name: string): Promise<NodePool | undefined> {
    try {
      return (await this.read(getNodePoolRequest(gke, name))) as NodePool;
    } catch (err) {
      // GKE names what it did not find: ".../nodePools/NAME" for the pool, ".../clusters/C" for the cluster.
      if (err instanceof GkeApiError && err.failure.status === 'NOT_FOUND' && /nodePools\//.test(err.failure.message)) return undefined;
      throw err;
    }
  }

  async listNodePools(gke: GkeSpec): Promise<NodePool[]> {
    const answer = (await this.read(listNodePoolsRequest(gke))) as { nodePools?: NodePool[] | null };
    return answer.nodePools ?? [];
  }

  /** A reading call, sent again after transient failures until the call timeout has passed. */
  async read(request: GkeRequest): Promise<unknown> {
    const deadline = Date.now() + this.options.callTimeoutMs;
    return this.sendWithRetry(request, deadline, false);
  }

  private describe(request: GkeRequest): string {
    return `${request.method} ${targetOf(request)} in ${clusterOf(request)}`;
  }

  private fail(failure: ApiFailure, request: GkeRequest): GkeApiError {
    return new GkeApiError(gkeError(failure, this.describe(request), this.gke.project), failure);
  }

  /** Sends until accepted; waits out other operations when `waitForConflicts`, transient failures always. */
  private async sendWithRetry(request: GkeRequest, deadline: number, waitForConflicts: boolean): Promise<unknown> {
    let delay = this.options.retryInitialMs;
    for (let attempt = 1; ; attempt++) {
      const left = deadline - Date.now();
      try {
        return await this.transport.send(request, Math.max(1, Math.min(this.options.callTimeoutMs, left)));
      } catch (err) {
        const failure = apiFailureOf(err);
        if (!failure) throw err;
        // A mutating call that timed out or failed inside GKE may have been done: sending it again
        // could make a second pool or fail on the first, so only a refusal (busy, unavailable) is resent.
        const resend = waitForConflicts ? isOperationConflict(failure) || failure.status === 'UNAVAILABLE' : isTransient(failure);
        if (!resend) throw this.fail(failure, request);
        if (Date.now() + delay > deadline) {
          const waited = isOperationConflict(failure) ? 'another operation still runs on the cluster' : 'the API kept failing';
          throw new BuildfleetError(isOperationConflict(failure) ? 'conflict' : 'network', `GKE ${this.describe(request)}: gave up after ${attempt} attempts: ${waited} (${failure.status}: ${failure.message})`);
        }
        this.log(`${this.describe(request)}: ${failure.status} (${failure.message}); sending again in ${(delay / 1000).toFixed(1)} s`);
        await sleep(delay);
        delay = Math.min(delay * 2, this.options.retryMaxMs);
      }
    }
  }

  private async runNow(request: MutatingRequest): Promise<Operation> {
    const deadline = Date.now() + this.options.operationTimeoutMs;
    let operation = (await this.sendWithRetry(request, deadline, true)) as Operation;
    const name = operation.name ?? '';
    this.log(`${this.describe(request)}: operation ${name} ${String(operation.status ?? '')}`);
    let delay = this.options.pollInitialMs;
    while (String(operation.status) !== 'DONE') {
      if (Date.now() + delay > deadline) {
        throw new BuildfleetError('network', `GKE ${this.describe(request)}: operation ${name} not DONE after ${seconds(this.options.operationTimeoutMs)} s (still ${String(operation.status)}); see it with "gcloud container operations describe ${name}"`);
      }
      await sleep(delay);
      delay = Math.min(delay * POLL_GROWTH, this.options.pollMaxMs);
      operation = (await this.sendWithRetry({ method: 'getOperation', request: { name: operationPath(this.gke, name) } }, deadline, false)) as Operation;
    }
    if (operation.error && (operation.error.code ?? 0) !== 0) {
      const failure: ApiFailure = { status: statusName(operation.error.code), message: (operation.error.message ?? operation.statusMessage ?? 'no message').replace(/\s+/g, ' ').trim() };
      throw new GkeApiError(gkeError(failure, `${this.describe(request)} (operation ${name})`, this.gke.project), failure);
    }
    return operation;
  }
}
