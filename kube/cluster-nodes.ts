import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { kubeError, statusOf } from './client.js';
import { recordNodeEvent } from './events.js';
import { GKE_POOL_LABEL, nodeView, podName, podsToEvict, type ClusterNodes, type KubeNodeView } from './node-view.js';

/**
 * ClusterNodes over @kubernetes/client-node: what the GKE provider (and the in-cluster agent's
 * remediation) does to nodes. A drain only ever evicts (the Eviction API checks each pod's
 * PodDisruptionBudget); it never deletes a pod, so a build the budget protects runs on until
 * the budget allows it to go or the deadline passes, and then the drain fails naming it.
 */

export const CORDON_REASON_ANNOTATION = 'buildfleet.io/cordon-reason';

export type Backoff = { initialMs: number; maxMs: number };
export type KubeClusterNodesOptions = {
  /** Between eviction rounds while budgets refuse (429); doubled up to maxMs, reset after progress. */
  backoff?: Backoff;
  /** Progress lines (evicted, blocked). */
  log?: (line: string) => void;
};

const strategic = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);

export type DrainRound = { evicted: string[]; blocked: string[]; gone: string[] };

export class KubeClusterNodes implements ClusterNodes {
  private readonly core: CoreV1Api;
  private readonly backoff: Backoff;

  constructor(config: KubeConfig, private readonly options: KubeClusterNodesOptions = {}) {
    this.core = config.makeApiClient(CoreV1Api);
    this.backoff = options.backoff ?? { initialMs: 1000, maxMs: 15_000 };
  }

  async listPoolNodes(pool: string): Promise<KubeNodeView[]> {
    try {
      const list = await this.core.listNode({ labelSelector: `${GKE_POOL_LABEL}=${pool}` });
      return list.items.map(nodeView).sort((a, b) => a.name.localeCompare(b.name));
    } catch (err) {
      throw kubeError(`list the nodes of pool ${pool}`, err);
    }
  }

  async cordon(name: string, reason: string): Promise<void> {
    await this.patchNode(name, `cordon node ${name}`, { spec: { unschedulable: true }, metadata: { annotations: { [CORDON_REASON_ANNOTATION]: reason } } });
    await recordNodeEvent(this.core, { name }, { reason: 'Cordoned', message: `cordoned by buildfleet: ${reason}`, type: 'Warning' });
  }

  async uncordon(name: string): Promise<void> {
    await this.patchNode(name, `uncordon node ${name}`, { spec: { unschedulable: null }, metadata: { annotations: { [CORDON_REASON_ANNOTATION]: null } } });
    await recordNodeEvent(this.core, { name }, { reason: 'Uncordoned', message: 'uncordoned by buildfleet' });
  }

  async deleteNode(name: string): Promise<void> {
    try {
      await this.core.deleteNode({ name });
    } catch (err) {
      if (statusOf(err) !== 404) throw kubeError(`delete node ${name}`, err);
    }
  }

  async drain(name: string, options: { deadlineSeconds: number }): Promise<void> {
    const deadline = Date.now() + options.deadlineSeconds * 1000;
    let delay = this.backoff.initialMs;
    for (;;) {
      const pods = podsToEvict(await this.podsOn(name));
      if (pods.length === 0) return;
      const round = await this.evictAll(pods);
      if (round.evicted.length) this.options.log?.(`drain ${name}: evicted ${round.evicted.join(', ')}`);
      const left = Date.now() >= deadline ? podsToEvict(await this.podsOn(name)) : undefined;
      if (left?.length === 0) return;
      if (left) {
        throw new BuildfleetError('conflict', `drain ${name}: ${options.deadlineSeconds} s passed with ${left.length} pod(s) left: ${left.map(podName).join(', ')}${round.blocked.length ? ` (their PodDisruptionBudget allows no disruption: ${round.blocked.join(', ')})` : ''}`);
      }
      if (round.blocked.length) this.options.log?.(`drain ${name}: PodDisruptionBudget blocks ${round.blocked.join(', ')}; retrying in ${delay} ms`);
      delay = round.evicted.length ? this.backoff.initialMs : delay;
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
      delay = Math.min(delay * 2, this.backoff.maxMs);
    }
  }

  /** One round: an eviction for each pod; a 429 (budget) or 404 (already gone) is an answer, not a failure. */
  async evictAll(pods: V1Pod[]): Promise<DrainRound> {
    const round: DrainRound = { evicted: [], blocked: [], gone: [] };
    await Promise.all(
      pods.map(async (pod) => {
        const namespace = pod.metadata?.namespace ?? 'default';
        const name = pod.metadata?.name ?? '';
        try {
          await this.core.createNamespacedPodEviction({ name, namespace, body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name, namespace } } });
          round.evicted.push(podName(pod));
        } catch (err) {
          const status = statusOf(err);
          if (status === 429) round.blocked.push(podName(pod));
          else if (status === 404) round.gone.push(podName(pod));
          else throw kubeError(`evict pod ${podName(pod)}`, err);
        }
      }),
    );
    return round;
  }

  private async podsOn(node: string): Promise<V1Pod[]> {
    try {
      return (await this.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` })).items;
    } catch (err) {
      throw kubeError(`list the pods on node ${node}`, err);
    }
  }

  private async patchNode(name: string, what: string, body: object): Promise<void> {
    try {
      await this.core.patchNode({ name, body }, strategic);
    } catch (err) {
      throw kubeError(what, err);
    }
  }
}
