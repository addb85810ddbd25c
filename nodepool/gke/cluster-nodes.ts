/**
 * What the GKE provider needs of the Kubernetes API, node by node: types only. The Kubernetes
 * integration (`kube/`, over @kubernetes/client-node) implements it; tests use an in-memory one.
 * GKE's API knows node pools and sizes, not nodes: which nodes a pool has, whether they are
 * Ready and untainted, cordon and drain all go through Kubernetes.
 */

export type KubeTaint = { key: string; value?: string; effect: string };
export type KubeCondition = { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string };

/** One Kubernetes Node as the provider sees it. */
export type KubeNodeView = {
  name: string;
  /** The kubelet's Ready condition is True. */
  ready: boolean;
  /** spec.unschedulable: cordoned. */
  unschedulable: boolean;
  taints: KubeTaint[];
  conditions: KubeCondition[];
  /** node.status.images names (tags and digests). */
  images: string[];
};

export interface ClusterNodes {
  /** The nodes of a GKE node pool (label cloud.google.com/gke-nodepool=POOL), by name. */
  listPoolNodes(pool: string): Promise<KubeNodeView[]>;
  /** Marks the node unschedulable, recording why (an annotation or event). */
  cordon(name: string, reason: string): Promise<void>;
  /**
   * Evicts the node's pods through the Eviction API, respecting PodDisruptionBudgets, until none
   * is left or the deadline passes (then it fails, saying which pods remain).
   */
  drain(name: string, options: { deadlineSeconds: number }): Promise<void>;
  /** Removes the Node object (the VM goes with the node pool's resize or deletion). */
  deleteNode?(name: string): Promise<void>;
}
