import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { NodeView, PoolManager, PoolView } from './pool.js';

/**
 * Jobs: a build command in the build image on a Ready node that is not cordoned, with the
 * node's workload disk as its work directory. A job never lands on a node that is still
 * pulling, unhealthy or draining: it waits for one that is Ready. How the job runs on the node
 * (a container, its log followed across runtime restarts) is the provider's part.
 */

/** Pure: the Ready, uncordoned node with the fewest running jobs (lowest id on a tie). */
export function pickNode(nodes: NodeView[]): NodeView | undefined {
  return nodes
    .filter((node) => node.phase === 'Ready' && !node.cordoned && node.agentAlive)
    .sort((a, b) => a.runningJobs - b.runningJobs || Number(a.id.slice(1)) - Number(b.id.slice(1)))[0];
}

export type ExecOptions = {
  /** Default: the node's first (build) image, pinned by digest. */
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
  const provider = await manager.providerOf(pool);
  const image = options.image ?? (await provider.describeNode(pool, node.id)).assigned?.images[0]?.pinned;
  if (!image) throw new BuildfleetError('usage', `pool ${pool} has no images: give --image`);

  const job = `job-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  log(`running ${job} on ${node.name}`);
  const run = await provider.runJob(pool, node.id, { id: job, image, command }, { stdout: options.stdout ?? process.stdout, stderr: options.stderr ?? process.stderr, log });
  return {
    job,
    node: node.name,
    exitCode: run.exitCode,
    waitedMs: run.startedAt.getTime() - waitStarted,
    runMs: run.finishedAt.getTime() - run.startedAt.getTime(),
    startedAt: run.startedAt.toISOString(),
    finishedAt: run.finishedAt.toISOString(),
  };
}
