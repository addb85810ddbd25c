import type { Writable } from 'node:stream';
import type { PoolSpec } from './pool-spec/pool-spec.js';
import type { NodeRecord, NodeStatus, PinnedImage } from './state/store.js';

/**
 * What a provider does for the pool manager: make, describe and remove a pool's nodes, run a
 * job on one, tell what each node's agent reports, and clean up after a crash. The manager,
 * `pool exec` and the benchmarks know only this; `local/` is the first implementation, and
 * `providers.ts` picks one by the spec's `provider`. Nothing here names a socket, a process or
 * a loop device: what only one provider has goes in a node's `details`.
 */

/** The settings a node's agent runs by (probe, saturation, remediation...), from the pool spec. */
export type NodeSettings = NodeRecord['spec'];

export function nodeSettings(spec: PoolSpec): NodeSettings {
  return { probe: spec.probe, saturation: spec.saturation, remediation: spec.remediation, liveRestore: spec.liveRestore, insecureRegistries: spec.insecureRegistries, prepull: spec.prepull, ...(spec.cache && { cache: spec.cache }) };
}

export type NodeDescription = {
  id: string;
  name: string;
  /** What the node was given; undefined while a node is half-made (a crash before its record). */
  assigned?: { images: PinnedImage[]; settings: NodeSettings };
  disks: { runtime: { sizeBytes: number }; workload: { sizeBytes: number; mountPoint: string } };
  cordoned: boolean;
  /** The node's agent is there to report (local: its process is alive). */
  agentAlive: boolean;
  /** Jobs on the node that have not ended for their clients (running, or ended with their exit code and output not read yet), counted without asking its runtime (which may hang). */
  runningJobs: number;
  /** Provider-specific facts, shown only in JSON output (local: loop devices, the runtime socket). */
  details: Record<string, unknown>;
};

/** What a node's agent reports (phase and its timestamped transitions, conditions, images). */
export interface NodeStatusSource {
  read(pool: string, id: string): Promise<NodeStatus | undefined>;
}

export type JobRequest = { id: string; image: string; command: string[] };
export type JobIO = { stdout: Writable; stderr: Writable; log: (line: string) => void };
/** startedAt is when the job was handed to the node; finishedAt is the runtime's own end time. */
export type JobRun = { exitCode: number; startedAt: Date; finishedAt: Date };

/** What removing nodes released on the host; a provider reports 0 for what it does not have. */
export type Released = { processes: number; mounts: number; loopDevices: number };

export interface Provider {
  /** The node status source the manager and the benchmarks read phases from. */
  readonly status: NodeStatusSource;
  /**
   * Whether this process may change the provider's nodes at all, asked before anything else
   * (local: root). Throws the BuildfleetError the user sees, worded for the command.
   */
  requireAccess(command: 'apply' | 'delete'): void;
  /**
   * What the host or account must offer for these new nodes (local: free space for their
   * disks, short enough socket paths). A dry run asks too, so it fails with the same line.
   */
  checkNewNodes(spec: PoolSpec, ids: string[]): Promise<void>;
  /**
   * Prepares what new nodes start from, once per set of image digests, when the spec's
   * `prepull.mode` asks for it (local `preloaded-disk`: a baked runtime disk); `made` is false
   * when it was there already. Providers without such a mode leave it out.
   */
  preload?(spec: PoolSpec, images: PinnedImage[]): Promise<{ made: boolean; seconds: number }>;
  /** Provisions a node; returns once its agent runs (the agent takes it to Ready). */
  createNode(spec: PoolSpec, id: string, images: PinnedImage[]): Promise<void>;
  /** New images or settings for a node that keeps its disks; false when there is no such node. */
  updateNode(spec: PoolSpec, id: string, images: PinnedImage[]): Promise<boolean>;
  /** The pool's node ids, in number order. */
  listNodes(pool: string): Promise<string[]>;
  describeNode(pool: string, id: string): Promise<NodeDescription>;
  /** No new job goes to a cordoned node. */
  cordon(pool: string, id: string, reason: string): Promise<void>;
  /** Stops the node and removes everything of it, whatever state a crash left it in. */
  deleteNode(pool: string, id: string): Promise<Released>;
  /** After its nodes are gone: whatever else a crash left of the pool (not its state dir). */
  cleanupPool(pool: string): Promise<Released>;
  /** Runs a job on the node and passes its output on until it has exited. */
  runJob(pool: string, id: string, job: JobRequest, io: JobIO): Promise<JobRun>;
}
