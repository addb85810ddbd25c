import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeRoll, planRoll, simulateRoll, type RollNode, type RollPlan } from './roll-plan.js';

const old = (id: string, over: Partial<RollNode> = {}): RollNode => ({ id, phase: 'Ready', cordoned: false, current: false, ...over });
const current = (id: string, over: Partial<RollNode> = {}): RollNode => ({ id, phase: 'Ready', cordoned: false, current: true, ...over });
const steps = (plan: RollPlan) => plan.steps.map((step) => `${step.action} ${step.ids.join(',')}`);

/** The roll's promise, over every step: never fewer serving nodes than asked (or than at the start). */
function assertInvariant(plan: RollPlan, nodes: RollNode[]): ReturnType<typeof simulateRoll> {
  const run = simulateRoll(plan, nodes);
  const floor = Math.min(plan.desired, run.servingAtStart);
  run.serving.forEach((serving, i) => assert.ok(serving >= floor, `after step ${i} (${steps(plan)[i]}): ${serving} serving < ${floor}`));
  return run;
}

test('surge 1: each new node is Ready before one old node is cordoned, drained and deleted, oldest first', () => {
  const nodes = [old('n1'), old('n2')];
  const plan = planRoll({ desired: 2, nodes, surge: 1, nextNumber: 3 });
  assert.deepEqual(steps(plan), [
    'create n3', 'wait-ready n3', 'cordon n1', 'drain n1', 'delete n1',
    'create n4', 'wait-ready n4', 'cordon n2', 'drain n2', 'delete n2',
  ]);
  assert.deepEqual(plan.add, ['n3', 'n4']);
  assert.deepEqual(plan.remove, ['n1', 'n2']);
  const run = assertInvariant(plan, nodes);
  assert.equal(Math.max(...run.total), 3, 'at most desired + surge nodes at once');
  assert.equal(run.serving.at(-1), 2);
  assert.equal(run.total.at(-1), 2);
});

test('surge 2 on 5 nodes: batches of two, the last batch takes the rest', () => {
  const nodes = ['n1', 'n2', 'n3', 'n4', 'n5'].map((id) => old(id));
  const plan = planRoll({ desired: 5, nodes, surge: 2, nextNumber: 6 });
  assert.deepEqual(steps(plan), [
    'create n6,n7', 'wait-ready n6,n7', 'cordon n1,n2', 'drain n1,n2', 'delete n1,n2',
    'create n8,n9', 'wait-ready n8,n9', 'cordon n3,n4', 'drain n3,n4', 'delete n3,n4',
    'create n10', 'wait-ready n10', 'cordon n5', 'drain n5', 'delete n5',
  ]);
  const run = assertInvariant(plan, nodes);
  assert.equal(Math.max(...run.total), 7);
  assert.equal(Math.min(...run.serving), 5);
});

test('a surge larger than the pool makes every new node at once', () => {
  const nodes = [old('n1'), old('n2')];
  const plan = planRoll({ desired: 2, nodes, surge: 5, nextNumber: 3 });
  assert.deepEqual(steps(plan), ['create n3,n4', 'wait-ready n3,n4', 'cordon n1,n2', 'drain n1,n2', 'delete n1,n2']);
  assertInvariant(plan, nodes);
});

test('old nodes that serve nothing go in the first batch; nodes on the images already stay', () => {
  const nodes = [old('n1'), current('n2'), old('n3', { phase: 'Unhealthy' }), old('n4', { cordoned: true })];
  const plan = planRoll({ desired: 3, nodes, surge: 1, nextNumber: 5 });
  assert.deepEqual(steps(plan), [
    'create n5', 'wait-ready n5', 'cordon n3', 'drain n3,n4', 'delete n3,n4',
    'create n6', 'wait-ready n6', 'cordon n1', 'drain n1', 'delete n1',
  ]);
  const run = assertInvariant(plan, nodes);
  assert.equal(run.servingAtStart, 2, 'only n1 and n2 served');
  assert.equal(run.serving.at(-1), 3, 'the roll also brings the pool back to its count');
});

test('a pool serving fewer than asked never loses a serving node before it is back to its count', () => {
  const nodes = [old('n1'), old('n2', { phase: 'Pulling' }), old('n3', { phase: 'Unhealthy' })];
  const plan = planRoll({ desired: 3, nodes, surge: 1, nextNumber: 4 });
  const run = assertInvariant(plan, nodes);
  const firstCordonOfN1 = plan.steps.findIndex((step) => step.action === 'cordon' && step.ids.includes('n1'));
  assert.ok(run.serving[firstCordonOfN1]! >= 3, 'n1 is cordoned only once three others serve');
});

test('current nodes still starting are waited for before any old node goes', () => {
  const nodes = [current('n3', { phase: 'Pulling' }), old('n1'), old('n2')];
  const plan = planRoll({ desired: 2, nodes, surge: 1, nextNumber: 4 });
  assert.deepEqual(steps(plan).slice(0, 2), ['wait-ready n3', 'create n4']);
  assertInvariant(plan, nodes);
});

test('nothing to roll: no steps, and the dry run says so', () => {
  const plan = planRoll({ desired: 2, nodes: [current('n1'), current('n2')], surge: 1, nextNumber: 3 });
  assert.deepEqual(plan.steps, []);
  assert.deepEqual(describeRoll(plan, 'ci'), ['pool ci runs the target images on every node: nothing to roll']);
});

test('nodes being removed are neither rolled nor counted; a bad surge is refused', () => {
  const plan = planRoll({ desired: 1, nodes: [old('n1', { phase: 'Removing' }), old('n2')], surge: 1, nextNumber: 3 });
  assert.deepEqual(plan.remove, ['n2']);
  assert.throws(() => planRoll({ desired: 1, nodes: [], surge: 0, nextNumber: 1 }), /surge must be an integer >= 1/);
});

test('the invariant holds over many pool shapes and surges', () => {
  const phases = ['Ready', 'Ready', 'Pulling', 'Unhealthy'] as const;
  for (let seed = 0; seed < 300; seed++) {
    const count = seed % 6;
    const nodes = Array.from({ length: count }, (_, i) => ({ id: `n${i + 1}`, phase: phases[(seed + i) % 4]!, cordoned: (seed + i) % 7 === 0, current: (seed * (i + 3)) % 5 === 0 }));
    const desired = (seed % 5) + 1;
    const surge = (seed % 3) + 1;
    const plan = planRoll({ desired, nodes, surge, nextNumber: count + 1 });
    const run = assertInvariant(plan, nodes);
    const counted = nodes.filter((n) => n.current && !n.cordoned).length;
    const cordonedCurrent = nodes.filter((n) => n.current && n.cordoned).length;
    assert.equal(run.total.at(-1) ?? nodes.length, Math.max(desired, counted) + cordonedCurrent, `seed ${seed}: ends at the desired count (cordoned current nodes stay beside it)`);
    assert.ok(run.serving.at(-1) === undefined || run.serving.at(-1)! >= desired, `seed ${seed}: ends with the desired count serving`);
    assert.ok(nodes.filter((n) => !n.current).every((n) => plan.remove.includes(n.id)), `seed ${seed}: every old node goes`);
  }
});

test('the dry run names every step', () => {
  const plan = planRoll({ desired: 1, nodes: [old('n1')], surge: 1, nextNumber: 2 });
  assert.deepEqual(describeRoll(plan, 'ci'), [
    'create node(s) with the new images: ci-n2',
    'wait until Ready (images pre-pulled by digest): ci-n2',
    'cordon: ci-n1',
    'drain (running builds finish): ci-n1',
    'delete: ci-n1',
  ]);
});
