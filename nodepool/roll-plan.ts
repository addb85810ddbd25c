import type { NodePhase } from './state/lifecycle.js';

/**
 * How a pool rolls to new images, pure: surge first. New nodes are made (at most `surge` at a
 * time) and must be Ready before any old node is cordoned; an old node is cordoned only while
 * the pool keeps `desired` serving nodes without it, then drained (its running builds finish,
 * up to the drain deadline) and deleted. So no step leaves fewer serving nodes (Ready and not
 * cordoned) than the spec asks for, or than served when the roll began if that was fewer.
 * The executor (`roll.ts`) runs the steps in order; `simulateRoll` replays them for the tests
 * and the dry run.
 */

export type RollNode = {
  id: string;
  phase: NodePhase | undefined;
  cordoned: boolean;
  /** Holds the target images already (by digest): it stays. */
  current: boolean;
};

export type RollStep =
  /** Provision these new nodes (in parallel) with the target images. */
  | { action: 'create'; ids: string[] }
  /** Wait until each is Ready (its images pulled and verified); a failed one stops the roll. */
  | { action: 'wait-ready'; ids: string[] }
  /** No new job goes to these old nodes. */
  | { action: 'cordon'; ids: string[] }
  /** Wait for their running builds to finish, up to the drain deadline. */
  | { action: 'drain'; ids: string[] }
  | { action: 'delete'; ids: string[] };

export type RollPlan = {
  desired: number;
  surge: number;
  /** New node ids, in creation order. */
  add: string[];
  /** Old node ids, in removal order. */
  remove: string[];
  steps: RollStep[];
};

export type RollInput = {
  desired: number;
  nodes: RollNode[];
  /** How many new nodes may exist beyond `desired` at once (>= 1: no old node goes before its replacement serves). */
  surge: number;
  /** The number of the first new node (after the highest ever used: ids are never reused). */
  nextNumber: number;
};

const serving = (node: Pick<RollNode, 'phase' | 'cordoned'>) => node.phase === 'Ready' && !node.cordoned;
const byNumber = (a: RollNode, b: RollNode) => Number(a.id.slice(1)) - Number(b.id.slice(1));

export function planRoll(input: RollInput): RollPlan {
  if (!Number.isInteger(input.surge) || input.surge < 1) throw new RangeError(`surge must be an integer >= 1, got ${input.surge}`);
  const current = input.nodes.filter((node) => node.current && node.phase !== 'Removing');
  // Old nodes that serve nothing go first (they cost no capacity), then the oldest.
  const old = input.nodes
    .filter((node) => !node.current && node.phase !== 'Removing')
    .sort((a, b) => Number(serving(a)) - Number(serving(b)) || byNumber(a, b));
  const steps: RollStep[] = [];
  const add: string[] = [];
  const remove: string[] = [];
  if (old.length === 0 && current.filter((node) => !node.cordoned).length >= input.desired) return { desired: input.desired, surge: input.surge, add, remove, steps };

  // Current nodes still starting count only once Ready: wait for them before anything goes. A
  // cordoned one (taken out by hand or by remediation) counts for nothing: it stays, beside the
  // `desired` serving nodes the roll leaves.
  const counted = current.filter((node) => !node.cordoned);
  const startingCurrent = counted.filter((node) => node.phase !== 'Ready').map((node) => node.id);
  if (startingCurrent.length > 0) steps.push({ action: 'wait-ready', ids: startingCurrent });
  let servingCount = counted.length + old.filter(serving).length;
  let toCreate = Math.max(0, input.desired - counted.length);
  let next = input.nextNumber;
  const remaining = [...old];

  while (remaining.length > 0 || toCreate > 0) {
    const batch = Math.min(input.surge, toCreate);
    if (batch > 0) {
      const ids = Array.from({ length: batch }, () => `n${next++}`);
      steps.push({ action: 'create', ids }, { action: 'wait-ready', ids });
      add.push(...ids);
      toCreate -= batch;
      servingCount += batch;
    }
    // As many old nodes as the pool can spare now: those not serving always, serving ones while
    // the rest still serve `desired`. With every replacement made, all the rest go.
    const going: RollNode[] = [];
    while (remaining.length > 0) {
      const node = remaining[0]!;
      if (serving(node)) {
        if (servingCount - 1 < input.desired && toCreate > 0) break;
        servingCount -= 1;
      }
      going.push(remaining.shift()!);
    }
    if (going.length > 0) {
      const ids = going.map((node) => node.id);
      const toCordon = going.filter((node) => !node.cordoned).map((node) => node.id);
      if (toCordon.length > 0) steps.push({ action: 'cordon', ids: toCordon });
      steps.push({ action: 'drain', ids }, { action: 'delete', ids });
      remove.push(...ids);
    }
    if (batch === 0 && going.length === 0) throw new Error('roll plan: no progress (a bug)');
  }
  return { desired: input.desired, surge: input.surge, add, remove, steps };
}

/**
 * Replays the plan from the nodes it was made for, new nodes Ready at their wait-ready step:
 * the serving count and the node count after each step. The invariant the roll keeps is
 * `serving[i] >= min(desired, serving at the start)` for every step.
 */
export function simulateRoll(plan: RollPlan, nodes: RollNode[]): { servingAtStart: number; serving: number[]; total: number[] } {
  const state = new Map(nodes.filter((node) => node.phase !== 'Removing').map((node) => [node.id, { ...node }]));
  const count = () => [...state.values()].filter(serving).length;
  const servingAtStart = count();
  const result = { servingAtStart, serving: [] as number[], total: [] as number[] };
  for (const step of plan.steps) {
    for (const id of step.ids) {
      if (step.action === 'create') state.set(id, { id, phase: 'Provisioning', cordoned: false, current: true });
      else if (step.action === 'wait-ready') state.get(id)!.phase = 'Ready';
      else if (step.action === 'cordon') state.get(id)!.cordoned = true;
      else if (step.action === 'delete') state.delete(id);
    }
    result.serving.push(count());
    result.total.push(state.size);
  }
  return result;
}

/** One line per step, as `pool roll --dry-run` prints it. */
export function describeRoll(plan: RollPlan, pool: string): string[] {
  if (plan.steps.length === 0) return [`pool ${pool} runs the target images on every node: nothing to roll`];
  const names = (ids: string[]) => ids.map((id) => `${pool}-${id}`).join(', ');
  const verbs: Record<RollStep['action'], string> = {
    create: 'create node(s) with the new images:',
    'wait-ready': 'wait until Ready (images pre-pulled by digest):',
    cordon: 'cordon:',
    drain: 'drain (running builds finish):',
    delete: 'delete:',
  };
  return plan.steps.map((step) => `${verbs[step.action]} ${names(step.ids)}`);
}
