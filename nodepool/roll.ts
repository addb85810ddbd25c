import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { PoolSpec } from './pool-spec/pool-spec.js';
import type { Provider } from './provider.js';
import { hasImages } from './plan.js';
import type { RollNode, RollPlan } from './roll-plan.js';
import type { NodeStatus, PinnedImage } from './state/store.js';

/**
 * Runs a roll plan (`roll-plan.ts`) through the provider interface only: creates the new nodes,
 * waits until they are Ready, then cordons, drains and deletes the old ones, step by step. A new
 * node that fails (its images cannot be pulled, its agent died, not Ready in time) stops the
 * roll before any more old node goes: the failed batch's new nodes are deleted, the old nodes
 * keep serving, and the error says which node failed and why.
 */

export type RollOptions = {
  /** Seconds a drained node's running builds have to finish before it is deleted anyway (default: the spec's remediation.drainTimeoutSeconds). */
  drainTimeoutSeconds?: number;
  /** How long new nodes have to become Ready (default 600 s). */
  readyTimeoutMs?: number;
  log?: (line: string) => void;
  /** How often node states are read while waiting (default 500 ms). */
  pollMs?: number;
};

export type RollResult = { pool: string; images: string[]; created: string[]; removed: string[]; seconds: number };

/** The pool's nodes as a roll plans them: phase, cordon, and whether they hold these images already. */
export async function rollNodes(provider: Provider, pool: string, pinned: PinnedImage[]): Promise<RollNode[]> {
  const target = pinned.map((image) => image.pinned);
  const nodes: RollNode[] = [];
  for (const id of await provider.listNodes(pool)) {
    const node = await provider.describeNode(pool, id);
    const status = await provider.status.read(pool, id);
    const images = node.assigned?.images.map((image) => image.pinned);
    nodes.push({ id, phase: status?.phase, cordoned: node.cordoned, current: hasImages(images ? { images } : {}, target) });
  }
  return nodes;
}

/** Why a new node will not become Ready by itself, or undefined while it may still. */
export function newNodeFailure(status: NodeStatus | undefined, agentAlive: boolean): string | undefined {
  if (status?.phase === 'Ready') return undefined;
  const prepull = status?.conditions.PrePullFailed;
  // DirectPullFailed hands over to the runtime's own pull, which may still succeed; a failure of
  // that pull (PullFailed) means the registry would not give this node the image.
  if (prepull?.status === 'True' && prepull.reason !== 'DirectPullFailed') return `cannot pull its images: ${prepull.message}`;
  if (!agentAlive) return `its agent died in phase ${status?.phase ?? 'Provisioning'}`;
  return undefined;
}

export async function executeRoll(provider: Provider, spec: PoolSpec, pinned: PinnedImage[], plan: RollPlan, options: RollOptions = {}): Promise<RollResult> {
  const log = options.log ?? (() => {});
  const started = Date.now();
  const pool = spec.name;
  const created: string[] = [];
  const removed: string[] = [];
  const name = (id: string) => `${pool}-${id}`;
  let batch: string[] = [];
  for (const step of plan.steps) {
    if (step.action === 'create') {
      batch = step.ids;
      log(`roll: creating ${step.ids.map(name).join(', ')} with ${pinned.map((image) => image.pinned).join(', ')}`);
      const made = await Promise.allSettled(step.ids.map((id) => provider.createNode(spec, id, pinned)));
      created.push(...step.ids);
      const failed = made.find((result): result is PromiseRejectedResult => result.status === 'rejected');
      if (failed) await stop(provider, pool, batch, plan, removed, `creating a new node failed: ${(failed.reason as Error).message}`, log);
    } else if (step.action === 'wait-ready') {
      const failure = await waitNewNodes(provider, pool, step.ids, options.readyTimeoutMs ?? 600_000, options.pollMs ?? 500, log);
      if (failure) await stop(provider, pool, batch.filter((id) => step.ids.includes(id)), plan, removed, failure, log);
      log(`roll: ${step.ids.map(name).join(', ')} Ready`);
    } else if (step.action === 'cordon') {
      log(`roll: cordoning ${step.ids.map(name).join(', ')}`);
      await Promise.all(step.ids.map((id) => provider.cordon(pool, id, 'roll')));
    } else if (step.action === 'drain') {
      await drain(provider, pool, step.ids, Date.now() + (options.drainTimeoutSeconds ?? spec.remediation.drainTimeoutSeconds) * 1000, log, options.pollMs ?? 500);
    } else {
      log(`roll: deleting ${step.ids.map(name).join(', ')}`);
      await Promise.all(step.ids.map((id) => provider.deleteNode(pool, id)));
      removed.push(...step.ids);
    }
  }
  return { pool, images: pinned.map((image) => image.pinned), created, removed, seconds: (Date.now() - started) / 1000 };
}

/** Deletes the failed batch's new nodes and throws the one line the user sees. */
async function stop(provider: Provider, pool: string, batch: string[], plan: RollPlan, removed: string[], why: string, log: (line: string) => void): Promise<never> {
  log(`roll: stopping: ${why}`);
  await Promise.all(batch.map((id) => provider.deleteNode(pool, id).catch(() => {})));
  const serving = plan.remove.filter((id) => !removed.includes(id));
  throw new BuildfleetError(
    'environment',
    `roll of pool ${pool} stopped: ${why}; ${batch.length ? `removed the new node(s) ${batch.map((id) => `${pool}-${id}`).join(', ')}` : 'no new node made yet'}; ${serving.length} old node(s) still serving${removed.length ? `, ${removed.length} already replaced` : ''}`,
  );
}

/** Waits until every node is Ready; returns why one failed (naming it) instead, or undefined. */
async function waitNewNodes(provider: Provider, pool: string, ids: string[], timeoutMs: number, pollMs: number, log: (line: string) => void): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  let said = '';
  for (;;) {
    const phases: string[] = [];
    let ready = 0;
    for (const id of ids) {
      const status = await provider.status.read(pool, id);
      const failure = newNodeFailure(status, (await provider.describeNode(pool, id)).agentAlive);
      if (failure) return `${pool}-${id} ${failure}`;
      if (status?.phase === 'Ready') ready++;
      phases.push(`${pool}-${id} ${status?.phase ?? 'Provisioning'}`);
    }
    if (ready === ids.length) return undefined;
    const summary = phases.join(', ');
    if (summary !== said) log(`roll: ${summary}`);
    said = summary;
    if (Date.now() > deadline) return `not Ready after ${Math.round(timeoutMs / 1000)} s (${summary})`;
    await sleep(pollMs);
  }
}

/**
 * Waits until the (cordoned) nodes run no build, or until the deadline: what is still running
 * then is cut off by the node's deletion, as a cloud's drain timeout does. A provider counts a
 * build as running until its client has collected its exit code and output (NodeDescription.
 * runningJobs), so a node whose builds ended is free to go.
 */
export async function drain(provider: Provider, pool: string, ids: string[], deadline: number, log: (line: string) => void, pollMs = 1000): Promise<void> {
  let said = '';
  for (;;) {
    const busy: string[] = [];
    for (const id of ids) {
      const jobs = (await provider.describeNode(pool, id)).runningJobs;
      if (jobs > 0) busy.push(`${pool}-${id} (${jobs})`);
    }
    if (busy.length === 0) return;
    if (Date.now() >= deadline) {
      log(`drain deadline passed: deleting with builds still running on ${busy.join(', ')}`);
      return;
    }
    const summary = busy.join(', ');
    if (summary !== said) log(`waiting for builds to finish on ${summary}`);
    said = summary;
    await sleep(pollMs);
  }
}
