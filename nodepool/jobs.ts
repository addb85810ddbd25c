import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough, type Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import { BuildfleetError } from '../imagebuilder/oci/errors.js';
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
      HostConfig: { Binds: [`${workdir}:${WORKSPACE}`], NetworkMode: 'host' },
      AttachStdout: true,
      AttachStderr: true,
    })
    .catch((err: unknown) => {
      throw runtimeError(node.name, err);
    });
  const startedAt = new Date();
  try {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.pipe(options.stdout ?? process.stdout, { end: false });
    stderr.pipe(options.stderr ?? process.stderr, { end: false });
    const stream = await container.attach({ stream: true, stdout: true, stderr: true }).catch((err: unknown) => {
      throw runtimeError(node.name, err);
    });
    docker.modem.demuxStream(stream, stdout, stderr);
    // If the runtime restarts mid-job, the attach breaks but the job goes on (live-restore).
    stream.on('error', () => {});
    try {
      await container.start();
    } catch (err) {
      // A runtime that dies mid-request may still have started the job: only an answer is final.
      if ((err as { statusCode?: number }).statusCode !== undefined) throw runtimeError(node.name, err);
    }
    const exitCode = await waitForExit(container);
    await new Promise((resolve) => setTimeout(resolve, 50)); // let the last output arrive
    const finishedAt = new Date();
    return { job, node: node.name, exitCode, waitedMs: startedAt.getTime() - waitStarted, runMs: finishedAt.getTime() - startedAt.getTime(), startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString() };
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
}

/**
 * The job's exit code, by polling: a hung runtime never answers a long `wait`, and a killed one
 * drops it without a word. Each look has its own timeout, and a runtime restart (remediation)
 * only delays the answer, as long as the container still exists.
 */
async function waitForExit(container: Docker.Container, startTimeoutMs = 60_000): Promise<number> {
  const startDeadline = Date.now() + startTimeoutMs;
  for (;;) {
    try {
      const info = await container.inspect({ abortSignal: AbortSignal.timeout(5000) } as object);
      if (!info.State.Running && info.State.Status !== 'created') return info.State.ExitCode;
      if (info.State.Status === 'created' && Date.now() > startDeadline) {
        throw new BuildfleetError('environment', `job container ${container.id.slice(0, 12)} never started`);
      }
    } catch (err) {
      if (err instanceof BuildfleetError) throw err;
      if ((err as { statusCode?: number }).statusCode === 404) {
        throw new BuildfleetError('environment', `job container ${container.id.slice(0, 12)} is gone: the node's runtime restarted without live-restore and took it`);
      }
    }
    await sleep(250);
  }
}

function runtimeError(node: string, err: unknown): BuildfleetError {
  return new BuildfleetError('environment', `${node}: the runtime refused the job: ${(err as Error).message.split('\n')[0]}`, { cause: err });
}
