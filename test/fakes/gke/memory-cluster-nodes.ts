import type { ClusterNodes, KubeNodeView } from '../../../nodepool/gke/cluster-nodes.js';
import type { FakeGke, OperationEffect } from './server.js';

/**
 * An in-memory Kubernetes side for the GKE provider's tests, fed by the fake GKE: when an
 * operation is DONE, the node pool's nodes register (not Ready, with the startup taint), turn
 * Ready after `readyAfterMs` and lose the taint after `untaintAfterMs` (what the kubelet and the
 * agent do). A size decrease removes cordoned nodes first; a pool deletion removes its nodes.
 *
 * After every change it counts the serving nodes (Ready, schedulable, untainted) of all the
 * buildfleet pool's GKE node pools; `lowestServing` is the fewest seen since `watchFrom()`.
 */

export type MemoryNode = KubeNodeView & { pool: string };

export class MemoryClusterNodes implements ClusterNodes {
  readonly nodes = new Map<string, MemoryNode>();
  readonly calls: string[] = [];
  lowestServing = Infinity;
  private watching = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private counter = 0;

  constructor(
    private readonly startupTaintKey: string,
    private readonly timing: { readyAfterMs: number; untaintAfterMs: number } = { readyAfterMs: 20, untaintAfterMs: 40 },
  ) {}

  /** Registers nodes as the fake GKE's operations finish. */
  attach(fake: FakeGke): void {
    fake.onDone = (effect) => this.apply(effect);
  }

  watchFrom(): void {
    this.watching = true;
    this.lowestServing = this.serving();
  }

  serving(): number {
    return [...this.nodes.values()].filter((node) => node.ready && !node.unschedulable && !node.taints.some((t) => t.key === this.startupTaintKey)).length;
  }

  private changed(): void {
    if (this.watching) this.lowestServing = Math.min(this.lowestServing, this.serving());
  }

  private later(ms: number, work: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      work();
      this.changed();
    }, ms);
    this.timers.add(timer);
  }

  private apply(effect: OperationEffect): void {
    const pool = effect.nodePool;
    const mine = () => [...this.nodes.values()].filter((node) => node.pool === pool);
    if (effect.type === 'DELETE_NODE_POOL') {
      for (const node of mine()) this.nodes.delete(node.name);
    } else if (effect.type === 'CREATE_NODE_POOL' || effect.type === 'SET_NODE_POOL_SIZE') {
      const want = effect.nodeCount ?? 0;
      while (mine().length < want) this.register(pool);
      // GKE picks the VMs to remove; here cordoned ones first, as a drained scale-down would want.
      const surplus = mine().sort((a, b) => Number(b.unschedulable) - Number(a.unschedulable)).slice(0, Math.max(0, mine().length - want));
      for (const node of surplus) this.nodes.delete(node.name);
    }
    this.changed();
  }

  private register(pool: string): void {
    const name = `gke-builds-${pool}-${String(++this.counter).padStart(4, '0')}`;
    const node: MemoryNode = { pool, name, ready: false, unschedulable: false, taints: [{ key: this.startupTaintKey, value: 'true', effect: 'NoSchedule' }], conditions: [{ type: 'Ready', status: 'False', reason: 'KubeletNotReady' }], images: [] };
    this.nodes.set(name, node);
    this.later(this.timing.readyAfterMs, () => {
      node.ready = true;
      node.conditions = [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }];
    });
    this.later(this.timing.untaintAfterMs, () => {
      node.taints = node.taints.filter((t) => t.key !== this.startupTaintKey);
    });
  }

  async listPoolNodes(pool: string): Promise<KubeNodeView[]> {
    return [...this.nodes.values()].filter((node) => node.pool === pool).map(({ pool: _pool, ...view }) => structuredClone(view));
  }

  async cordon(name: string, reason: string): Promise<void> {
    this.calls.push(`cordon ${name} (${reason})`);
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node ${name}`);
    node.unschedulable = true;
    this.changed();
  }

  async drain(name: string, options: { deadlineSeconds: number }): Promise<void> {
    this.calls.push(`drain ${name} within ${options.deadlineSeconds} s`);
    if (!this.nodes.get(name)?.unschedulable) throw new Error(`drain of ${name} before it was cordoned`);
  }

  stop(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}
