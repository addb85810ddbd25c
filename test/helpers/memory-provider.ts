import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { PoolSpec } from '../../nodepool/pool-spec/pool-spec.js';
import { nodeSettings, type JobIO, type JobRequest, type JobRun, type NodeDescription, type NodeSettings, type NodeStatusSource, type Provider, type Released } from '../../nodepool/provider.js';
import { transition, type Transition } from '../../nodepool/state/lifecycle.js';
import type { NodeStatus, PinnedImage } from '../../nodepool/state/store.js';

/**
 * A provider whose nodes live in this process's memory: no root, no disks, no daemons. A node
 * goes Provisioning -> RuntimeReady -> Pulling -> Ready a few milliseconds after it is made,
 * with transitions stamped at fixed offsets (so its phase times are known exactly). Every call
 * is recorded, so a test can tell that the manager went through the provider.
 *
 * Jobs: `exit N` ends with code N; `wait-for KEY` runs until release(KEY). Each job prints one
 * line naming its command, node and image.
 */

type MemoryNode = {
  pool: string;
  id: string;
  sizes: { runtime: number; workload: number };
  assigned: { images: PinnedImage[]; settings: NodeSettings };
  transitions: Transition[];
  cordoned: boolean;
  runningJobs: number;
  conditions: NodeStatus['conditions'];
};

/** Phase offsets from a node's creation, in ms: its phase times are runtime 1.5 s, pull 2.5 s, ready 4 s. */
export const MEMORY_PHASE_OFFSETS = { RuntimeReady: 1500, Pulling: 1500, Ready: 4000 } as const;

/** What deleting one memory node reports, and what the pool clean-up reports: distinct, so sums show. */
export const MEMORY_NODE_RELEASE: Released = { processes: 3, mounts: 2, loopDevices: 0 };
export const MEMORY_POOL_RELEASE: Released = { processes: 0, mounts: 1, loopDevices: 0 };

export class MemoryProvider implements Provider {
  readonly calls: string[] = [];
  readonly status: NodeStatusSource;
  private readonly nodes = new Map<string, MemoryNode>();
  private readonly gates = new Map<string, { promise: Promise<void>; open: () => void }>();
  private readonly unpullable = new Set<string>();

  /** capacity: how many nodes a pool may have (checkNewNodes refuses more). */
  constructor(private readonly capacity = 8) {
    this.status = { read: async (pool, id) => this.readStatus(pool, id) };
  }

  requireAccess(command: 'apply' | 'delete'): void {
    this.calls.push(`requireAccess ${command}`);
  }

  async checkNewNodes(spec: PoolSpec, ids: string[]): Promise<void> {
    this.calls.push(`checkNewNodes ${spec.name} ${ids.join(',')}`);
    const total = (await this.listNodes(spec.name)).length + ids.length;
    if (total > this.capacity) throw new BuildfleetError('environment', `memory provider: room for ${this.capacity} nodes, ${total} asked`);
  }

  async createNode(spec: PoolSpec, id: string, images: PinnedImage[]): Promise<void> {
    this.calls.push(`createNode ${spec.name} ${id}`);
    const created = new Date();
    const node: MemoryNode = {
      pool: spec.name,
      id,
      sizes: { runtime: spec.disks.runtime.size, workload: spec.disks.workload.size },
      assigned: { images, settings: nodeSettings(spec) },
      transitions: transition([], 'Provisioning', created, 'node created'),
      cordoned: false,
      runningJobs: 0,
      conditions: {},
    };
    this.nodes.set(key(spec.name, id), node);
    const missing = images.find((image) => this.unpullable.has(image.digest));
    // The "agent" takes the node to Ready shortly after: the manager has to wait for it.
    setTimeout(() => {
      if (missing) {
        // As the real agent's pre-pull: the node stays Pulling, PrePullFailed says why, retries go on.
        node.transitions = transition(transition(node.transitions, 'RuntimeReady', created), 'Pulling', created);
        node.conditions.PrePullFailed = { status: 'True', reason: 'PullFailed', message: `${missing.pinned}: manifest unknown (attempt 1; retrying)`, lastTransitionTime: created.toISOString() };
        return;
      }
      for (const phase of ['RuntimeReady', 'Pulling', 'Ready'] as const) {
        node.transitions = transition(node.transitions, phase, new Date(created.getTime() + MEMORY_PHASE_OFFSETS[phase]));
      }
    }, 20);
  }

  async updateNode(spec: PoolSpec, id: string, images: PinnedImage[]): Promise<boolean> {
    this.calls.push(`updateNode ${spec.name} ${id}`);
    const node = this.nodes.get(key(spec.name, id));
    if (!node) return false;
    node.assigned = { images, settings: nodeSettings(spec) };
    return true;
  }

  async listNodes(pool: string): Promise<string[]> {
    return [...this.nodes.values()].filter((node) => node.pool === pool).map((node) => node.id).sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
  }

  async describeNode(pool: string, id: string): Promise<NodeDescription> {
    const node = this.require(pool, id);
    return {
      id,
      name: `${pool}-${id}`,
      assigned: node.assigned,
      disks: { runtime: { sizeBytes: node.sizes.runtime }, workload: { sizeBytes: node.sizes.workload, mountPoint: '/memory/workload' } },
      cordoned: node.cordoned,
      agentAlive: true,
      runningJobs: node.runningJobs,
      details: { provider: 'memory' },
    };
  }

  async cordon(pool: string, id: string, reason: string): Promise<void> {
    this.calls.push(`cordon ${pool} ${id} ${reason}`);
    this.require(pool, id).cordoned = true;
  }

  async deleteNode(pool: string, id: string): Promise<Released> {
    this.calls.push(`deleteNode ${pool} ${id}`);
    this.nodes.delete(key(pool, id));
    return { ...MEMORY_NODE_RELEASE };
  }

  async cleanupPool(pool: string): Promise<Released> {
    this.calls.push(`cleanupPool ${pool}`);
    return { ...MEMORY_POOL_RELEASE };
  }

  async runJob(pool: string, id: string, job: JobRequest, io: JobIO): Promise<JobRun> {
    this.calls.push(`runJob ${pool} ${id} ${job.command.join(' ')}`);
    const node = this.require(pool, id);
    const startedAt = new Date();
    node.runningJobs += 1;
    try {
      io.stdout.write(`ran ${job.command.join(' ')} on ${pool}-${id} in ${job.image}\n`);
      const [verb, argument = ''] = job.command;
      if (verb === 'wait-for') await this.gate(argument).promise;
      return { exitCode: verb === 'exit' ? Number(argument) : 0, startedAt, finishedAt: new Date() };
    } finally {
      node.runningJobs -= 1;
    }
  }

  /** Nodes made from now on with an image of this digest cannot pull it (PrePullFailed, never Ready). */
  failPulls(digest: string): void {
    this.unpullable.add(digest);
  }

  /** Ends the jobs waiting for key. */
  release(key: string): void {
    this.gate(key).open();
  }

  private gate(name: string): { promise: Promise<void>; open: () => void } {
    let gate = this.gates.get(name);
    if (!gate) {
      let open = () => {};
      const promise = new Promise<void>((resolve) => (open = resolve));
      gate = { promise, open };
      this.gates.set(name, gate);
    }
    return gate;
  }

  private readStatus(pool: string, id: string): NodeStatus | undefined {
    const node = this.nodes.get(key(pool, id));
    if (!node) return undefined;
    const phase = node.transitions.at(-1)!.phase;
    return {
      phase,
      transitions: node.transitions,
      conditions: node.conditions,
      images: node.assigned.images.map((image) => ({ pinned: image.pinned, present: phase === 'Ready' })),
      metricsUrl: `memory://${pool}/${id}/metrics`,
      updatedAt: new Date().toISOString(),
    };
  }

  private require(pool: string, id: string): MemoryNode {
    const node = this.nodes.get(key(pool, id));
    if (!node) throw new BuildfleetError('not-found', `memory provider: no node ${pool}-${id}`);
    return node;
  }
}

function key(pool: string, id: string): string {
  return `${pool}/${id}`;
}
