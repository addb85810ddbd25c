import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import type { ClusterNodes, KubeNodeView } from './cluster-nodes.js';
import type { GkeOperations } from './operations.js';
import { createNodePoolRequest, deleteNodePoolRequest, gkePoolName, requireGke, type MutatingRequest } from './requests.js';

/**
 * What `updateNodePool` cannot change (boot disk, local SSDs, secondary boot disk, machine
 * type) changes by rotation: a new node pool beside the old one, wait until its nodes are
 * Ready and untainted, cordon and drain the old pool's nodes, delete the old pool. The pool
 * never has fewer Ready nodes than the spec asks: the old nodes serve until the new ones do.
 * The plan is pure (the dry run prints its requests); `rotate` carries it out.
 */

export type RotationStep =
  | { kind: 'create'; request: MutatingRequest }
  | { kind: 'wait-ready'; pool: string; nodes: number }
  | { kind: 'drain'; pool: string }
  | { kind: 'delete'; request: MutatingRequest };

export type RotationPlan = { oldPool: string; newPool: string; nodes: number; steps: RotationStep[] };

/** A node that may take builds: Ready, not cordoned, the startup taint gone. */
export function serving(node: KubeNodeView, startupTaintKey: string): boolean {
  return node.ready && !node.unschedulable && !node.taints.some((taint) => taint.key === startupTaintKey);
}

/** undefined when nothing fixed at creation changed: the pool stays (resize or update it in place). */
export function planRotation(current: PoolSpec, wanted: PoolSpec): RotationPlan | undefined {
  const oldPool = gkePoolName(current);
  const newPool = gkePoolName(wanted);
  if (oldPool === newPool) return undefined;
  const nodes = wanted.nodes;
  return {
    oldPool,
    newPool,
    nodes,
    steps: [
      { kind: 'create', request: createNodePoolRequest(wanted, { name: newPool, nodeCount: nodes }) },
      { kind: 'wait-ready', pool: newPool, nodes },
      { kind: 'drain', pool: oldPool },
      { kind: 'delete', request: deleteNodePoolRequest(requireGke(current), oldPool) },
    ],
  };
}

export function describeRotation(plan: RotationPlan): string[] {
  return plan.steps.map((step) => {
    switch (step.kind) {
      case 'create':
        return `create node pool ${plan.newPool} with ${plan.nodes} nodes`;
      case 'wait-ready':
        return `wait until ${step.nodes} nodes of ${step.pool} are Ready and untainted`;
      case 'drain':
        return `cordon and drain the nodes of ${step.pool} (Eviction API, PodDisruptionBudgets respected)`;
      case 'delete':
        return `delete node pool ${plan.oldPool}`;
    }
  });
}

/** The requests the plan sends, in order: what `--dry-run` prints. */
export function rotationRequests(plan: RotationPlan): MutatingRequest[] {
  return plan.steps.flatMap((step) => (step.kind === 'create' || step.kind === 'delete' ? [step.request] : []));
}

export type RotationOptions = {
  operations: GkeOperations;
  nodes: ClusterNodes;
  startupTaintKey: string;
  readyTimeoutMs?: number;
  pollMs?: number;
  drainDeadlineSeconds: number;
  log?: (line: string) => void;
};

/** Waits until `count` nodes of the pool serve; fails naming what the nodes still lack. */
export async function waitServing(nodes: ClusterNodes, pool: string, count: number, startupTaintKey: string, timeoutMs: number, pollMs: number): Promise<KubeNodeView[]> {
  const deadline = Date.now() + timeoutMs;
  // Quick looks first (a node that is nearly there), then every pollMs.
  let delay = Math.min(250, pollMs);
  for (;;) {
    const views = await nodes.listPoolNodes(pool);
    const ready = views.filter((node) => serving(node, startupTaintKey));
    if (ready.length >= count) return ready;
    if (Date.now() + delay > deadline) {
      const waiting = views.filter((node) => !serving(node, startupTaintKey)).map((node) => `${node.name} ${node.ready ? (node.unschedulable ? 'cordoned' : 'still tainted') : 'not Ready'}`);
      throw new BuildfleetError('environment', `node pool ${pool}: ${ready.length} of ${count} nodes Ready and untainted after ${(timeoutMs / 1000).toFixed(timeoutMs < 10_000 ? 1 : 0)} s (${views.length} registered${waiting.length > 0 ? `; ${waiting.join(', ')}` : ''})`);
    }
    await sleep(delay);
    delay = Math.min(delay * 2, pollMs);
  }
}

export async function rotate(plan: RotationPlan, options: RotationOptions): Promise<void> {
  const log = options.log ?? (() => {});
  const readyTimeoutMs = options.readyTimeoutMs ?? 30 * 60_000;
  const pollMs = options.pollMs ?? 5_000;
  for (const [index, step] of plan.steps.entries()) {
    log(describeRotation(plan)[index]!);
    switch (step.kind) {
      case 'create':
        await options.operations.run(step.request);
        break;
      case 'wait-ready':
        try {
          await waitServing(options.nodes, step.pool, step.nodes, options.startupTaintKey, readyTimeoutMs, pollMs);
        } catch (err) {
          // The old pool still serves: take the new one away rather than leave two.
          log(`new node pool ${plan.newPool} did not become Ready; deleting it, ${plan.oldPool} stays`);
          const createStep = plan.steps.find((s): s is Extract<RotationStep, { kind: 'create' }> => s.kind === 'create')!;
          const parent = (createStep.request.request as { parent?: string }).parent;
          await options.operations.run({ method: 'deleteNodePool', request: { name: `${parent}/nodePools/${plan.newPool}` } }).catch(() => {});
          throw err;
        }
        break;
      case 'drain': {
        const old = await options.nodes.listPoolNodes(step.pool);
        for (const node of old) await options.nodes.cordon(node.name, `rotation to node pool ${plan.newPool}`);
        // One node at a time: its pods move to the new pool before the next is emptied.
        for (const node of old) await options.nodes.drain(node.name, { deadlineSeconds: options.drainDeadlineSeconds });
        break;
      }
      case 'delete':
        await options.operations.run(step.request);
        break;
    }
  }
}
