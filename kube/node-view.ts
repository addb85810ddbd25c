import type { V1Node, V1Pod } from '@kubernetes/client-node';

import type { KubeNodeView } from '../nodepool/gke/cluster-nodes.js';

/**
 * Pure views of Kubernetes objects: what the GKE provider sees of a node (the types of the seam
 * it declares, `nodepool/gke/cluster-nodes.ts`, which this folder implements), and which pods a
 * drain evicts.
 */

export type { ClusterNodes, KubeCondition, KubeNodeView, KubeTaint } from '../nodepool/gke/cluster-nodes.js';

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
