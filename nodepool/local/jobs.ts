import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { JobIO, JobRequest, JobRun } from '../provider.js';
import { readNodeRecord } from '../state/store.js';
import { LogCursor, LogFrameDecoder, parseLogEntry } from './job-logs.js';
import { containerBlkioLimits, newContainerShare, nodeDiskBudgets } from './io-budget.js';
import { imagePathOf, prepareToolcache } from './toolcache.js';
import { isAlive } from './processes.js';

/**
 * A job on a local node: a container of the job's image on the node's own dockerd, with a
 * directory of the node's workload disk as its work directory. What the job prints is its
 * container's log, followed (not attached) so that a runtime restart under the job loses none of it.
 */

export const JOB_LABEL = 'io.buildfleet.job';
export const WORKSPACE = '/workspace';

export type LocalJobTarget = { pool: string; node: string; nodeDir: string; dockerSocket: string; workloadMount: string };

/**
 * A job counts as running on its node (`runningJobs`, what a drain waits for) from its start until
 * its client has read its exit code and the end of its log and removed its container, not only
 * while its processes run: a file per job in the node dir with the client's pid. A client that
 * died no longer holds the node (its pid is gone), its container's processes still do.
 */
const IN_FLIGHT = 'jobs-in-flight';

export async function jobsInFlight(nodeDir: string): Promise<number> {
  const dir = join(nodeDir, IN_FLIGHT);
  let count = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number((await readFile(join(dir, name), 'utf8').catch(() => '')).trim());
    if (pid > 0 && isAlive(pid)) count++;
  }
  return count;
}

async function markInFlight(nodeDir: string, id: string): Promise<() => Promise<void>> {
  const dir = join(nodeDir, IN_FLIGHT);
  await mkdir(dir, { recursive: true });
  const marker = join(dir, id);
  await writeFile(`${marker}.tmp`, String(process.pid));
  await rename(`${marker}.tmp`, marker);
  return () => rm(marker, { force: true });
}

export async function runContainerJob(target: LocalJobTarget, job: JobRequest, io: JobIO): Promise<JobRun> {
  const done = await markInFlight(target.nodeDir, job.id);
  try {
    return await runMarkedJob(target, job, io);
  } finally {
    await done();
  }
}

async function runMarkedJob(target: LocalJobTarget, job: JobRequest, io: JobIO): Promise<JobRun> {
  const workdir = join(target.workloadMount, 'jobs', job.id);
  await mkdir(workdir, { recursive: true });
  const docker = new Docker({ socketPath: target.dockerSocket });
  // Held to the node's disk budgets from its first write: its part beside the jobs already running
  // (the agent's BudgetKeeper, sole writer of the parts from then on, adjusts all of them within 200 ms).
  const record = await readNodeRecord(target.nodeDir);
  // The node's toolchain cache (spec `cache:`): the declared toolchains fetched before the job, the cache mounted read-only.
  const toolcache = record.spec.cache
    ? await prepareToolcache(record.spec.cache, {
        node: target.node,
        workloadMount: target.workloadMount,
        insecureRegistries: record.spec.insecureRegistries,
        imagePath: async () => imagePathOf((await docker.getImage(job.image).inspect()).Config?.Env),
        log: io.log,
      })
    : undefined;
  const budgets = await nodeDiskBudgets(record);
  const blkio = containerBlkioLimits(await newContainerShare(target.nodeDir, budgets));
  const container = await docker
    .createContainer({
      Image: job.image,
      Cmd: job.command,
      WorkingDir: WORKSPACE,
      Labels: { [JOB_LABEL]: job.id, 'io.buildfleet.pool': target.pool },
      // The job's output is its container's log: json-file keeps it on the runtime disk across a
      // runtime restart, whatever log driver the daemon defaults to, so none of it is lost.
      ...(toolcache && { Env: toolcache.env }),
      HostConfig: { Binds: [`${workdir}:${WORKSPACE}`, ...(toolcache?.binds ?? [])], NetworkMode: 'host', LogConfig: { Type: 'json-file', Config: {} }, ...blkio },
    })
    .catch((err: unknown) => {
      throw runtimeError(target.node, err);
    });
  const startedAt = new Date();
  try {
    try {
      await container.start();
    } catch (err) {
      // A runtime that dies mid-request may still have started the job: only an answer is final.
      if ((err as { statusCode?: number }).statusCode !== undefined) throw runtimeError(target.node, err);
    }
    const { exitCode, finishedAt } = await relayOutputUntilExit(container, io, io.log, () => !existsSync(target.nodeDir) && `${target.node} was deleted before the end of its job could be read`);
    return { exitCode, startedAt, finishedAt };
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
async function relayOutputUntilExit(container: Docker.Container, sinks: Sinks, log: (line: string) => void, nodeGone: GoneCheck, startTimeoutMs = 60_000): Promise<{ exitCode: number; finishedAt: Date }> {
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
    const state = await jobState(container, nodeGone);
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
async function jobState(container: Docker.Container, nodeGone: GoneCheck): Promise<Docker.ContainerInspectInfo['State']> {
  for (;;) {
    try {
      return (await container.inspect({ abortSignal: AbortSignal.timeout(5000) } as object)).State;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) {
        throw new BuildfleetError('environment', `job container ${container.id.slice(0, 12)} is gone: the node's runtime restarted without live-restore and took it`);
      }
      // A runtime that restarts comes back; one whose node was deleted never does.
      const gone = nodeGone();
      if (gone) throw new BuildfleetError('environment', gone);
    }
    await sleep(250);
  }
}

/** Why the node cannot answer any more (false while it may). */
type GoneCheck = () => string | false;

/** The runtime's FinishedAt, or now when it gives none (its zero time is year 1). */
function endedAt(finishedAt: string): Date {
  const at = Date.parse(finishedAt);
  return Number.isFinite(at) && at > 0 ? new Date(at) : new Date();
}

function runtimeError(node: string, err: unknown): BuildfleetError {
  return new BuildfleetError('environment', `${node}: the runtime refused the job: ${(err as Error).message.split('\n')[0]}`, { cause: err });
}
