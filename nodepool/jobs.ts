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
  const container = await docker.createContainer({
    Image: image,
    Cmd: command,
    WorkingDir: WORKSPACE,
    Labels: { [JOB_LABEL]: job, 'io.buildfleet.pool': pool },
    HostConfig: { Binds: [`${workdir}:${WORKSPACE}`], NetworkMode: 'host' },
    AttachStdout: true,
    AttachStderr: true,
  });
  const startedAt = new Date();
  try {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.pipe(options.stdout ?? process.stdout, { end: false });
    stderr.pipe(options.stderr ?? process.stderr, { end: false });
    const stream = await container.attach({ stream: true, stdout: true, stderr: true });
    docker.modem.demuxStream(stream, stdout, stderr);
    // If the runtime restarts mid-job, the attach breaks but the job goes on (live-restore).
    stream.on('error', () => {});
    await container.start();
    const exitCode = await waitForExit(container);
    await new Promise((resolve) => setTimeout(resolve, 50)); // let the last output arrive
    const finishedAt = new Date();
    return { job, node: node.name, exitCode, waitedMs: startedAt.getTime() - waitStarted, runMs: finishedAt.getTime() - startedAt.getTime(), startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString() };
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
}

/**
 * The job's exit code. A runtime restart (remediation) breaks the wait request: ask again until
 * the restarted runtime answers, as long as the container exists.
 */
async function waitForExit(container: Docker.Container): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    try {
      const result = (await container.wait()) as { StatusCode: number };
      return result.StatusCode;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) throw new BuildfleetError('environment', `job container ${container.id.slice(0, 12)} vanished`);
      await sleep(Math.min(2000, 100 * 2 ** Math.min(attempt, 5)));
    }
  }
}
