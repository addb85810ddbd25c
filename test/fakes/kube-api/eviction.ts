import { matchesSelector } from './selectors.js';
import { ApiError, RESOURCES, type KubeObject, type ObjectStore, type ResourceType } from './store.js';

/**
 * The policy/v1 Eviction subresource: deletes a pod unless its PodDisruptionBudget allows no
 * disruption now (429 TooManyRequests, which a drain retries). Like the real server, pods that
 * are Pending, finished or already being deleted are evicted without asking the budget, and a
 * pod under two budgets is refused (500).
 *
 * Simplified: the real disruption controller takes the expected pod count from the pods'
 * controller (a Deployment's replicas); here it is the budget's pods that have not finished, so
 * a finished pod stops counting against `maxUnavailable`. Eviction deletes the pod at once
 * (grace period 0).
 */

const type = (plural: string): ResourceType => RESOURCES.find((resource) => resource.plural === plural)!;
const PODS = type('pods');
const BUDGETS = type('poddisruptionbudgets');

type PodLike = { status?: { phase?: string; conditions?: { type: string; status: string }[] } };
type BudgetSpec = { selector?: Parameters<typeof matchesSelector>[0]; minAvailable?: number | string; maxUnavailable?: number | string };

const phaseOf = (pod: KubeObject) => (pod as PodLike).status?.phase ?? 'Pending';
const finished = (pod: KubeObject) => phaseOf(pod) === 'Succeeded' || phaseOf(pod) === 'Failed';

/** Running, not being deleted, and not reported unready. */
function healthy(pod: KubeObject): boolean {
  const ready = (pod as PodLike).status?.conditions?.find((condition) => condition.type === 'Ready');
  return phaseOf(pod) === 'Running' && !pod.metadata.deletionTimestamp && ready?.status !== 'False';
}

/** An int or a percentage of `of`, rounded up (as the disruption controller does). */
function count(value: number | string, of: number): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+)%$/.exec(value);
  if (!match) throw new ApiError(422, 'Invalid', `not an int or percentage: ${value}`);
  return Math.ceil((Number(match[1]) * of) / 100);
}

export type BudgetState = { expected: number; healthy: number; desiredHealthy: number; disruptionsAllowed: number };

export function budgetState(budget: KubeObject, pods: KubeObject[]): BudgetState {
  const spec = (budget.spec ?? {}) as BudgetSpec;
  const covered = pods.filter((pod) => matchesSelector(spec.selector, pod.metadata.labels ?? {}) && !finished(pod));
  const expected = covered.length;
  const healthyCount = covered.filter(healthy).length;
  const desiredHealthy =
    spec.minAvailable !== undefined ? count(spec.minAvailable, expected) : spec.maxUnavailable !== undefined ? Math.max(0, expected - count(spec.maxUnavailable, expected)) : 0;
  return { expected, healthy: healthyCount, desiredHealthy, disruptionsAllowed: Math.max(0, healthyCount - desiredHealthy) };
}

export function evictPod(store: ObjectStore, namespace: string, name: string): void {
  const pod = store.get(PODS, namespace, name);
  const ignoresBudget = phaseOf(pod) === 'Pending' || finished(pod) || Boolean(pod.metadata.deletionTimestamp);
  if (!ignoresBudget) {
    const budgets = store.list(BUDGETS, namespace).filter((budget) => matchesSelector((budget.spec as BudgetSpec | undefined)?.selector, pod.metadata.labels ?? {}));
    if (budgets.length > 1) throw new ApiError(500, 'InternalError', 'This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.');
    const budget = budgets[0];
    if (budget) {
      const state = budgetState(budget, store.list(PODS, namespace));
      if (state.disruptionsAllowed <= 0) {
        throw new ApiError(429, 'TooManyRequests', "Cannot evict pod as it would violate the pod's disruption budget.", {
          causes: [{ reason: 'DisruptionBudget', message: `The disruption budget ${budget.metadata.name} needs ${state.desiredHealthy} healthy pods and has ${state.healthy} currently` }],
        });
      }
    }
  }
  store.delete(PODS, namespace, name);
}
