import { createHash } from 'node:crypto';
import type { protos } from '@google-cloud/container';
import type { GkeSpec, PoolSpec } from '../pool-spec/pool-spec.js';

/**
 * Pure: a pool spec -> the container.v1 requests buildfleet sends (the shapes
 * `v1.ClusterManagerClient` takes, enums by name). Nothing here does I/O, so the dry run, the
 * provider and the tests all build the same requests from one place.
 */

export type CreateNodePoolRequest = protos.google.container.v1.ICreateNodePoolRequest;
export type SetNodePoolSizeRequest = protos.google.container.v1.ISetNodePoolSizeRequest;
export type DeleteNodePoolRequest = protos.google.container.v1.IDeleteNodePoolRequest;
export type UpdateNodePoolRequest = protos.google.container.v1.IUpdateNodePoolRequest;
export type SetNodePoolAutoscalingRequest = protos.google.container.v1.ISetNodePoolAutoscalingRequest;
export type NodePoolAutoscaling = protos.google.container.v1.INodePoolAutoscaling;
export type GetOperationRequest = protos.google.container.v1.IGetOperationRequest;
export type GetNodePoolRequest = protos.google.container.v1.IGetNodePoolRequest;
export type ListNodePoolsRequest = protos.google.container.v1.IListNodePoolsRequest;
export type Operation = protos.google.container.v1.IOperation;
export type NodePool = protos.google.container.v1.INodePool;
export type NodeConfig = protos.google.container.v1.INodeConfig;

/** One request, named by the client method that sends it. */
export type MutatingRequest =
  | { method: 'createNodePool'; request: CreateNodePoolRequest }
  | { method: 'setNodePoolSize'; request: SetNodePoolSizeRequest }
  | { method: 'deleteNodePool'; request: DeleteNodePoolRequest }
  | { method: 'updateNodePool'; request: UpdateNodePoolRequest }
  | { method: 'setNodePoolAutoscaling'; request: SetNodePoolAutoscalingRequest };
export type ReadingRequest =
  | { method: 'getOperation'; request: GetOperationRequest }
  | { method: 'getNodePool'; request: GetNodePoolRequest }
  | { method: 'listNodePools'; request: ListNodePoolsRequest };
export type GkeRequest = MutatingRequest | ReadingRequest;

/** The Kubernetes label every node of a buildfleet pool carries: how the pool's GKE node pools are found. */
export const POOL_LABEL = 'buildfleet.io/pool';

export function clusterPath(gke: Pick<GkeSpec, 'project' | 'location' | 'cluster'>): string {
  return `projects/${gke.project}/locations/${gke.location}/clusters/${gke.cluster}`;
}

export function nodePoolPath(gke: Pick<GkeSpec, 'project' | 'location' | 'cluster'>, nodePool: string): string {
  return `${clusterPath(gke)}/nodePools/${nodePool}`;
}

/** getOperation wants the full name; an Operation carries only its short one. */
export function operationPath(gke: Pick<GkeSpec, 'project' | 'location'>, operation: string): string {
  return operation.startsWith('projects/') ? operation : `projects/${gke.project}/locations/${gke.location}/operations/${operation}`;
}

/**
 * What GKE fixes when it creates a pool (updateNodePool cannot change it): the boot disk, the
 * local SSDs, the secondary boot disk, the machine and image type. A pool is named by the
 * spec's name and a digest of these, so a spec that changes them names a different pool: the
 * rotation's new pool.
 */
export function fixedSettings(gke: GkeSpec): Record<string, unknown> {
  return { machineType: gke.machineType, imageType: gke.imageType, bootDisk: gke.bootDisk, workloadDevice: gke.workloadDevice, secondaryBootDisk: gke.secondaryBootDisk ?? null };
}

/** `ci-3fa2c1`: at most 32 + 7 characters, within GKE's 40 for a node pool name. */
export function gkePoolName(spec: PoolSpec): string {
  const digest = createHash('sha256').update(JSON.stringify(fixedSettings(requireGke(spec)))).digest('hex');
  return `${spec.name}-${digest.slice(0, 6)}`;
}

export function requireGke(spec: PoolSpec): GkeSpec {
  if (!spec.gke) throw new Error(`pool ${spec.name}: not a gke pool`);
  return spec.gke;
}

/** A bare disk image name is the project's own image. */
export function diskImagePath(gke: GkeSpec, image: string): string {
  return image.includes('/') ? image : `projects/${gke.project}/global/images/${image}`;
}

export function nodeConfig(spec: PoolSpec): NodeConfig {
  const gke = requireGke(spec);
  const { bootDisk, workloadDevice } = gke;
  const config: NodeConfig = {
    machineType: gke.machineType,
    imageType: gke.imageType,
    // The runtime lives here: its size and speed are what `crictl pods` waits on.
    bootDisk: {
      diskType: bootDisk.type,
      sizeGb: bootDisk.sizeGb,
      ...(bootDisk.provisionedIops === undefined ? {} : { provisionedIops: bootDisk.provisionedIops }),
      ...(bootDisk.provisionedThroughput === undefined ? {} : { provisionedThroughput: bootDisk.provisionedThroughput }),
    },
    // The builds' device, apart from the runtime's: raw block (the agent formats it), not
    // ephemeral storage, which would put kubelet and the runtime on it too.
    ...(workloadDevice.type === 'localNvmeSsdBlock' ? { localNvmeSsdBlockConfig: { localSsdCount: workloadDevice.count } } : { localSsdCount: workloadDevice.count }),
    labels: { ...gke.labels, [POOL_LABEL]: spec.name },
    taints: [{ key: gke.startupTaint.key, value: gke.startupTaint.value, effect: 'NO_SCHEDULE' }],
    kubeletConfig: {
      imageGcHighThresholdPercent: gke.kubeletConfig.imageGcHighThresholdPercent,
      imageGcLowThresholdPercent: gke.kubeletConfig.imageGcLowThresholdPercent,
    },
  };
  if (gke.secondaryBootDisk) config.secondaryBootDisks = [{ mode: 'CONTAINER_IMAGE_CACHE', diskImage: diskImagePath(gke, gke.secondaryBootDisk) }];
  if (gke.imageStreaming) config.gcfsConfig = { enabled: true };
  return config;
}

export function createNodePoolRequest(spec: PoolSpec, options: { name?: string; nodeCount?: number } = {}): MutatingRequest {
  const gke = requireGke(spec);
  const nodePool: NodePool = {
    name: options.name ?? gkePoolName(spec),
    config: nodeConfig(spec),
    initialNodeCount: options.nodeCount ?? spec.nodes,
  };
  if (gke.autoscaling) nodePool.autoscaling = nodePoolAutoscaling(gke);
  return { method: 'createNodePool', request: { parent: clusterPath(gke), nodePool } };
}

/** The spec's bounds; none: autoscaling off (what turns it off on an existing pool). */
export function nodePoolAutoscaling(gke: GkeSpec): NodePoolAutoscaling {
  return gke.autoscaling ? { enabled: true, minNodeCount: gke.autoscaling.min, maxNodeCount: gke.autoscaling.max } : { enabled: false };
}

/** The node settings `updateNodePool` changes on an existing pool (everything else in nodeConfig is fixed at creation). */
export const UPDATABLE_SETTINGS = ['labels', 'taints', 'kubeletConfig', 'gcfsConfig'] as const;
export type UpdatableSetting = (typeof UPDATABLE_SETTINGS)[number];

/** Pure: the updatable node settings that differ between two specs of one node pool, in UPDATABLE_SETTINGS order. */
export function changedUpdatableSettings(current: PoolSpec, wanted: PoolSpec): UpdatableSetting[] {
  const before = nodeConfig(current);
  const after = nodeConfig(wanted);
  return UPDATABLE_SETTINGS.filter((setting) => JSON.stringify(before[setting] ?? null) !== JSON.stringify(after[setting] ?? null));
}

/**
 * One `updateNodePool` carrying the wanted value of each setting named (and nothing else: GKE
 * changes what a request carries). Labels and taints are whole sets (NodeLabels / NodeTaints
 * replace the pool's), so the pool label and the startup taint go along. `nodeVersion` and
 * `imageType`, though marked required in the proto, are left out as Terraform's provider does for
 * such updates: "-" would upgrade the nodes to the control plane's version, and the image type
 * is fixed at creation here.
 */
export function updateNodePoolRequest(spec: PoolSpec, nodePool: string, settings: readonly UpdatableSetting[]): MutatingRequest {
  const config = nodeConfig(spec);
  const request: UpdateNodePoolRequest = { name: nodePoolPath(requireGke(spec), nodePool) };
  for (const setting of settings) {
    if (setting === 'labels') request.labels = { labels: config.labels ?? {} };
    else if (setting === 'taints') request.taints = { taints: config.taints ?? [] };
    else if (setting === 'kubeletConfig') request.kubeletConfig = config.kubeletConfig ?? {};
    // Image streaming switched off is an explicit `enabled: false`, not an absent field.
    else request.gcfsConfig = config.gcfsConfig ?? { enabled: false };
  }
  return { method: 'updateNodePool', request };
}

export function setNodePoolAutoscalingRequest(gke: GkeSpec, nodePool: string): MutatingRequest {
  return { method: 'setNodePoolAutoscaling', request: { name: nodePoolPath(gke, nodePool), autoscaling: nodePoolAutoscaling(gke) } };
}

export function setNodePoolSizeRequest(gke: GkeSpec, nodePool: string, nodeCount: number): MutatingRequest {
  return { method: 'setNodePoolSize', request: { name: nodePoolPath(gke, nodePool), nodeCount } };
}

export function deleteNodePoolRequest(gke: GkeSpec, nodePool: string): MutatingRequest {
  return { method: 'deleteNodePool', request: { name: nodePoolPath(gke, nodePool) } };
}

export function getOperationRequest(gke: GkeSpec, operation: string): ReadingRequest {
  return { method: 'getOperation', request: { name: operationPath(gke, operation) } };
}

export function getNodePoolRequest(gke: GkeSpec, nodePool: string): ReadingRequest {
  return { method: 'getNodePool', request: { name: nodePoolPath(gke, nodePool) } };
}

export function listNodePoolsRequest(gke: GkeSpec): ReadingRequest {
  return { method: 'listNodePools', request: { parent: clusterPath(gke) } };
}

/** The node pool a request acts on, for messages: `ci-3fa2c1`. */
export function targetOf(request: GkeRequest): string {
  if (request.method === 'createNodePool') return request.request.nodePool?.name ?? '?';
  const name = 'name' in request.request ? request.request.name : undefined;
  return name?.split('/').at(-1) ?? ('parent' in request.request ? request.request.parent ?? '?' : '?');
}

/** The cluster a request acts on: operations on one cluster are serialised by this key. */
export function clusterOf(request: GkeRequest): string {
  const path = request.method === 'createNodePool' || request.method === 'listNodePools' ? request.request.parent : request.request.name;
  const match = /^projects\/[^/]+\/locations\/[^/]+\/clusters\/[^/]+/.exec(path ?? '');
  return match ? match[0] : path ?? '';
}
