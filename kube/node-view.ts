import type { V1Node, V1Pod } from '@kubernetes/client-node';

/**
 * Pure views of Kubernetes objects: what the GKE provider sees of a node, and which pods a drain
 * evicts. The types are the ones `nodepool/gke/cluster-nodes.ts` declares (kept structurally the
 * same, since nodepool/ may not import kube/).
 */

export type KubeTaint = { key: string; value?: string; effect: string };
export type KubeCondition = { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string };

export type KubeNodeView = {
  name: string;
  /** The kubelet's Ready condition is True. */
  ready: boolean;
  /** spec.unschedulable: cordoned. */
  unschedulable: boolean;
  taints: KubeTaint[];
  conditions: KubeCondition[];
  /** Every name of node.status.images (tags and digests). */
  images: string[];
};

export interface ClusterNodes {
  /** The nodes of a GKE node pool (label cloud.google.com/gke-nodepool=POOL), by name. */
  listPoolNodes(pool: string): Promise<KubeNodeView[]>;
  /** Marks the node unschedulable, recording why (an annotation and an Event). */
  cordon(name: string, reason: string): Promise<void>;
  /** Evicts the node's pods (Eviction API, PodDisruptionBudgets respected) until none is left; past the deadline it fails naming the pods left. */
  drain(name: string, options: { deadlineSeconds: number }): Promise<void>;
  /** Removes the Node object (the VM goes with the node pool's resize or deletion). */
  deleteNode?(name: string): Promise<void>;
}

export const GKE_POOL_LABEL = 'cloud.google.com/gke-nodepool';

/** A time the client decoded into a Date (or left a string) as RFC 3339. */
const time = (value: Date | string | undefined) => (value === undefined ? undefined : value instanceof Date ? value.toISOString().replace(/\.000Z$/, 'Z') : value);

export function nodeView(node: V1Node): KubeNodeView {
  const conditions = (node.status?.conditions ?? []).map((c) => ({
    type: c.type,
    status: c.status,
    ...(c.reason && { reason: c.reason }),
    ...(c.message && { message: c.message }),
    ...(c.lastTransitionTime && { lastTransitionTime: time(c.lastTransitionTime) }),
  }));
  return {
    name: node.metadata?.name ?? '',
    ready: conditions.some((c) => c.type === 'Ready' && c.status === 'True'),
    unschedulable: node.spec?.unschedulable === true,
    taints: (node.spec?.taints ?? []).map((t) => ({ key: t.key, ...(t.value !== undefined && { value: t.value }), effect: t.effect })),
    conditions,
    images: (node.status?.images ?? []).flatMap((image) => image.names ?? []),
  };
}

/**
 * The pods a drain evicts: all but those a DaemonSet owns (its controller would put them back,
 * and they serve the node itself, like the agent) and static (mirror) pods, which the API
 * cannot remove.
 */
export function podsToEvict(pods: V1Pod[]): V1Pod[] {
  return pods.filter((pod) => {
    const daemon = pod.metadata?.ownerReferences?.some((owner) => owner.kind === 'DaemonSet' && owner.controller !== false);
    const mirror = pod.metadata?.annotations?.['kubernetes.io/config.mirror'] !== undefined;
    return !daemon && !mirror;
  });
}

export const podName = (pod: V1Pod) => `${pod.metadata?.namespace ?? 'default'}/${pod.metadata?.name ?? ''}`;
