import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { NodeView, PoolManager, PoolView } from './pool.js';

/**
 * Jobs: a build command in a container of the build image, on a Ready node that is not
 * cordoned, with the node's workload disk as its work directory. A job never lands on a node
 * that is still pulling, unhealthy or draining: it waits for one that is Ready.
 */

export const JOB_LABEL = 'io.buildfleet.job';
export const WORKSPACE = '/workspace';

/** Pure: the Ready, uncordoned node with the fewest running jobs (lowest id on a tie). */
export function pickNode(nodes: NodeView[]): NodeView | undefined {
  return nodes
    .filter((node) => node.phase === 'Ready' && !node.cordoned && node.agentAlive)
    .sort((a, b) => a.runningJobs - b.runningJobs || Number(a.id.slice(1)) - Number(b.id.slice(1)))[0];
}

export type ExecOptions = {
  /** Default: the pool's first (build) image, pinned by digest. */
  image?: string;
  /** How long to wait for a Ready node. */
  waitMs?: number;
  stdout?: Writable;
  stderr?: Writable;
  log?: (line: string) => void;
};

export type JobResult = { job: string; node: string; exitCode: number; waitedMs: number; runMs: number; startedAt: string; finishedAt: string };

export async function execJob(manager: PoolManager, pool: string, command: string[], options: ExecOptions = {}): Promise<JobResult> {
  if (command.length === 0) throw new BuildfleetError('usage', 'pool exec: give the command after --');
  const log = options.log ?? (() => {});
  const waitStarted = Date.now();
  const deadline = waitStarted + (options.waitMs ?? 600_000);
  let view: PoolView;
  let node: NodeView | undefined;
  let said = '';
  for (;;) {
    view = await manager.status(pool);
    node = pickNode(view.nodes);
    if (node) break;
    const phases = view.nodes.map((n) => `${n.name} ${n.phase}${n.cordoned ? ' (cordoned)' : ''}`).join(', ') || 'no nodes';
    if (phases !== said) log(`waiting for a Ready node: ${phases}`);
    said = phases;
    if (Date.now() > deadline) throw new BuildfleetError('environment', `pool ${pool}: no Ready node within ${Math.round((options.waitMs ?? 600_000) / 1000)} s (${phases})`);
    await sleep(200);
  }
  const record = await manager.store.readNode(pool, node.id);
  const image = options.image ?? record?.images[0]?.pinned;
  if (!image) throw new BuildfleetError('usage', `pool ${pool} has no images: give --image`);

  const job = `job-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const workdir = join(node.disks.workload.mountPoint, 'jobs', job);
  await mkdir(workdir, { recursive: true });
  const docker = new Docker({ socketPath: node.dockerSocket });
  log(`running ${job} on ${node.name}`);
  const container = await docker
    .createContainer({
      Image: image,
      Cmd: command,
      WorkingDir: WORKSPACE,
      Labels: { [JOB_LABEL]: job, 'io.buildfleet.pool': pool },
      // The job's output is its container's log: json-file keeps it on the runtime disk across a
      // runtime restart, whatever log driver the daemon defaults to, so none of it is lost.
      HostConfig: { Binds: [`${workdir}:${WORKSPACE}`], NetworkMode: 'host', LogConfig: { Type: 'json-file', Config: {} } },
    })
    .catch((err: unknown) => {
      throw runtimeError(node.name, err);
    });
  const startedAt = new Date();
  try {
    try {
      await container.start();
    } catch (err) {
      // A runtime that dies mid-request may still have started the job: only an answer is final.
      if ((err as { statusCode?: number }).statusCode !== undefined) throw runtimeError(node.name, err);
    }
    const { exitCode, finishedAt } = await relayOutputUntilExit(container, { stdout: options.stdout ?? process.stdout, stderr: options.stderr ?? process.stderr }, log);
    return { job, node: node.name, exitCode, waitedMs: startedAt.getTime() - waitStarted, runMs: finishedAt.getTime() - startedAt.getTime(), startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString() };
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
}

type Sinks = { stdout: Writable; stderr: Writable };

/**
 * Follows the job's log to its sinks until the job has exited and its log was read to the end,
 * then gives its exit code and when it ended (the runtime's word: after a runtime restart we
 * learn it late). A runtime restart (remediation, live-restore) breaks the stream but
 * not the job: the next read resumes from the cursor once the runtime answers again. Only a
 * read that began after the job had exited can be the last one: a stream that ended cleanly
 * may also be a runtime shutting down.
 */
async function relayOutputUntilExit(container: Docker.Container, sinks: Sinks, log: (line: string) => void, startTimeoutMs = 60_000): Promise<{ exitCode: number; finishedAt: Date }> {
  const startDeadline = Date.now() + startTimeoutMs;
  const cursor = new LogCursor();
  let exited: { exitCode: number; finishedAt: Date } | undefined;
  for (;;) {
    const complete = await relayLogOnce(container, cursor, sinks, log).catch((err: unknown) => {
      // The runtime went away mid-read (or never answered): resume once it is back.
      if (err instanceof BuildfleetError) throw err;
      return false;
    });
    if (complete && exited) return exited;
    const state = await jobState(container);
    if (state.Status === 'created' && Date.now() > startDeadline) {
      throw new BuildfleetError('environment', `job container ${container.id.slice(0, 12)} never started`);
    }
    if (!state.Running && state.Status !== 'created') exited = { exitCode: state.ExitCode, finishedAt: endedAt(state.FinishedAt) };
    else if (!complete || state.Status === 'created') await sleep(250);
  }
}

/** One read of the log from the cursor on; true when the runtime ended it at a frame boundary. */
async function relayLogOnce(container: Docker.Container, cursor: LogCursor, sinks: Sinks, log: (line: string) => void): Promise<boolean> {
  // A hung runtime never answers: give up on the request, not on the stream once it flows.
  const noAnswer = new AbortController();
  const timer = setTimeout(() => noAnswer.abort(), 5000);
  const since = cursor.since();
  const stream = await container
    .logs({ follow: true, stdout: true, stderr: true, timestamps: true, ...(since && { since }), abortSignal: noAnswer.signal })
    .finally(() => clearTimeout(timer));
  cursor.beginRead();
  const decoder = new LogFrameDecoder();
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    for (const frame of decoder.push(chunk)) {
      if (frame.stream === 'system') {
        log(`runtime: ${frame.payload.toString().trim()}`);
        continue;
      }
      const entry = parseLogEntry(frame.payload);
      if (!cursor.admit(frame.stream, entry.at)) continue;
      const sink = sinks[frame.stream];
      if (!sink.write(entry.text)) {
        await once(sink, 'drain').catch((err: unknown) => {
          throw new BuildfleetError('environment', `cannot pass on the job's ${frame.stream}: ${(err as Error).message}`, { cause: err });
        });
      }
    }
  }
  return decoder.atBoundary;
}

/**
 * The job container's state, by asking until the runtime answers: a hung runtime never answers
 * and a killed one drops the question, so each look has its own timeout.
 */
async function jobState(container: Docker.Container): Promise<Docker.ContainerInspectInfo['State']> {
  for (;;) {
    try {
      return (await container.inspect({ abortSignal: AbortSignal.timeout(5000) } as object)).State;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) {
        throw new BuildfleetError('environment', `job container ${container.id.slice(0, 12)} is gone: the node's runtime restarted without live-restore and took it`);
      }
    }
    await sleep(250);
  }
}

/** The runtime's FinishedAt, or now when it gives none (its zero time is year 1). */
function endedAt(finishedAt: string): Date {
  const at = Date.parse(finishedAt);
  return Number.isFinite(at) && at > 0 ? new Date(at) : new Date();
}

function runtimeError(node: string, err: unknown): BuildfleetError {
  return new BuildfleetError('environment', `${node}: the runtime refused the job: ${(err as Error).message.split('\n')[0]}`, { cause: err });
}

export type LogStream = 'stdout' | 'stderr';
export type LogFrame = { stream: LogStream | 'system'; payload: Buffer };

/**
 * Pure: splits the runtime's multiplexed log stream into frames (8-byte header: stream, 3 zero
 * bytes, big-endian length). The runtime writes each log entry as one frame, so a frame is one
 * entry with its timestamp, also for a partial line.
 */
export class LogFrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): LogFrame[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: LogFrame[] = [];
    let offset = 0;
    while (this.pending.length - offset >= 8) {
      const size = this.pending.readUInt32BE(offset + 4);
      if (this.pending.length - offset - 8 < size) break;
      const kind = this.pending[offset]!;
      const stream = kind === 1 ? 'stdout' : kind === 2 ? 'stderr' : 'system';
      frames.push({ stream, payload: this.pending.subarray(offset + 8, offset + 8 + size) });
      offset += 8 + size;
    }
    this.pending = this.pending.subarray(offset);
    return frames;
  }

  /** False when the stream stopped inside a frame. */
  get atBoundary(): boolean {
    return this.pending.length === 0;
  }
}

const ENTRY_TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) /;

/** Pure: an entry of a log read with timestamps: its time in nanoseconds since the epoch, and its bytes. */
export function parseLogEntry(payload: Buffer): { at: bigint; text: Buffer } {
  const head = payload.subarray(0, 40).toString('latin1');
  const match = ENTRY_TIMESTAMP.exec(head);
  const seconds = match ? Date.parse(`${match[1]}${match[3]}`) / 1000 : Number.NaN;
  if (!match || !Number.isFinite(seconds)) throw new BuildfleetError('environment', `the runtime sent a log entry without a timestamp: ${JSON.stringify(head)}`);
  const at = BigInt(seconds) * 1_000_000_000n + BigInt((match[2] ?? '').padEnd(9, '0'));
  return { at, text: payload.subarray(match[0].length) };
}

/**
 * Pure: which log entries were delivered, so a read that resumes after a broken stream delivers
 * each entry exactly once. Within a stream the runtime stamps entries in order (equal stamps
 * happen: the pieces of a long line share one), so per stream the last stamp delivered and how
 * many entries carried it say what a replay must skip. Entries of the two streams can be
 * written slightly out of stamp order, so a resumed read starts a margin before the last stamp.
 */
export class LogCursor {
  private readonly streams = {
    stdout: { last: -1n, delivered: 0, seen: 0 },
    stderr: { last: -1n, delivered: 0, seen: 0 },
  };

  constructor(private readonly resumeMarginNs = 1_000_000_000n) {}

  /** Call before each read: a read replays from since(). */
  beginRead(): void {
    for (const stream of Object.values(this.streams)) stream.seen = 0;
  }

  /** True when the entry is new (and counts it as delivered); false for one already delivered. */
  admit(stream: LogStream, at: bigint): boolean {
    const state = this.streams[stream];
    if (at < state.last) return false;
    if (at === state.last) {
      state.seen += 1;
      if (state.seen <= state.delivered) return false;
      state.delivered = state.seen;
      return true;
    }
    state.last = at;
    state.delivered = 1;
    state.seen = 1;
    return true;
  }

  /** The runtime's `since` (seconds.nanoseconds) for the next read; undefined: from the start. */
  since(): string | undefined {
    const last = [this.streams.stdout.last, this.streams.stderr.last].reduce((a, b) => (a > b ? a : b));
    if (last < 0n) return undefined;
    const from = last > this.resumeMarginNs ? last - this.resumeMarginNs : 0n;
    return `${from / 1_000_000_000n}.${(from % 1_000_000_000n).toString().padStart(9, '0')}`;
  }
}
