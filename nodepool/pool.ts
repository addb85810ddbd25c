import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { parseReference } from '../imagebuilder/oci/reference.js';
import type { RegistryOptions } from '../imagebuilder/registry/index.js';
import { openSource } from '../imagebuilder/transports/index.js';
import { type PoolSpec } from './pool-spec/pool-spec.js';
import { phaseTimes, type NodePhase, type PhaseTimes } from './state/lifecycle.js';
import { StateStore, type NodeRecord, type NodeStatus, type PinnedImage } from './state/store.js';
import { nodeNumber, planIsEmpty, planPool, settingsKey, type ExistingNode, type PoolPlan } from './plan.js';
import type { NodeDescription, Provider, Released } from './provider.js';
import { builtInProviders, type ProviderName, type ProviderResolver } from './providers.js';
import { planRoll, type RollPlan } from './roll-plan.js';
import { drain, executeRoll, rollNodes, type RollOptions, type RollResult } from './roll.js';

/**
 * The pool manager: converges a pool on its spec (apply), and the imperative verbs on top of it
 * (create, resize, status, delete). It plans, provisions through the provider, and waits; the
 * nodes' agents do the rest.
 */

export type NodeView = {
  name: string;
  id: string;
  phase: NodePhase | 'Unknown';
  cordoned: boolean;
  agentAlive: boolean;
  conditions: NodeStatus['conditions'];
  phaseTimes: PhaseTimes;
  transitions: NodeStatus['transitions'];
  images: NodeStatus['images'];
  runningJobs: number;
  metricsUrl?: string;
  disks: NodeDescription['disks'];
  /** What only this pool's provider knows of the node (local: loop devices, the runtime socket). */
  details: NodeDescription['details'];
};

export type PoolView = { name: string; provider: string; desiredNodes: number; images: string[]; nodes: NodeView[] };

export type ManagerOptions = {
  registry?: RegistryOptions;
  log?: (line: string) => void;
  /** Which provider a pool's `provider` names (default: the providers this build has). */
  providers?: ProviderResolver;
  /** How often a roll reads node states while it waits (default 500 ms; tests with an in-memory provider go faster). */
  pollMs?: number;
};

export type ApplyOptions = {
  dryRun?: boolean;
  wait?: boolean;
  timeoutMs?: number;
  mustBeNew?: boolean;
  /** Nodes on other images are rolled this many new nodes at a time (default 1). */
  surge?: number;
  /** Overrides the spec's remediation.drainTimeoutSeconds for nodes this run drains. */
  drainTimeoutSeconds?: number;
};

export type RollRequest = Omit<ApplyOptions, 'mustBeNew' | 'wait'>;

export class PoolManager {
  private readonly log: (line: string) => void;
  private readonly providers = new Map<ProviderName, Provider>();

  constructor(
    readonly store: StateStore,
    private readonly options: ManagerOptions = {},
  ) {
    this.log = options.log ?? (() => {});
  }

  /** The provider a spec names; refuses (exit 7) one this build does not have. */
  providerFor(name: ProviderName): Provider {
    let provider = this.providers.get(name);
    if (!provider) {
      provider = (this.options.providers ?? builtInProviders)(name, this.store);
      this.providers.set(name, provider);
    }
    return provider;
  }

  /** The provider of an existing pool, by its record. */
  async providerOf(pool: string): Promise<Provider> {
    return this.providerFor((await this.store.requirePool(pool)).spec.provider);
  }

  /** Tags become digests now, so every node pulls exactly the same bytes. */
  async pinImages(spec: PoolSpec): Promise<PinnedImage[]> {
    const pinned: PinnedImage[] = [];
    for (const reference of spec.images) {
      const ref = parseReference(reference);
      if (ref.transport !== 'registry') throw new BuildfleetError('usage', `images: ${reference}: a node pulls from a registry; give a registry reference`);
      const source = await openSource(ref, { registry: { ...this.options.registry, insecure: [...(this.options.registry?.insecure ?? []), ...spec.insecureRegistries] } });
      try {
        const image = await source.resolve();
        pinned.push({ reference, pinned: `${ref.registry}/${ref.repository}@${image.manifestDigest}`, digest: image.manifestDigest });
      } finally {
        await source.close();
      }
    }
    return pinned;
  }

  async existingNodes(provider: Provider, pool: string): Promise<ExistingNode[]> {
    const nodes: ExistingNode[] = [];
    for (const id of await provider.listNodes(pool)) {
      const node = await provider.describeNode(pool, id);
      const status = await provider.status.read(pool, id);
      nodes.push({
        id,
        phase: status?.phase,
        runtimeDiskBytes: node.disks.runtime.sizeBytes,
        workloadDiskBytes: node.disks.workload.sizeBytes,
        settingsKey: node.assigned ? settingsKey({ ...node.assigned.settings } as PoolSpec, node.assigned.images.map((image) => image.pinned)) : '',
        ...(node.assigned && { images: node.assigned.images.map((image) => image.pinned) }),
      });
    }
    return nodes;
  }

  async plan(spec: PoolSpec, pinned: PinnedImage[]): Promise<PoolPlan> {
    const record = await this.store.readPool(spec.name);
    return planPool(spec, record ? await this.existingNodes(this.providerFor(spec.provider), spec.name) : undefined, pinned.map((image) => image.pinned));
  }

  /**
   * Prepares what new nodes of this spec start from, ahead of `apply` (which would otherwise do
   * it for its first node): `pool bake` for preloaded disks. Checks as `apply` does first.
   */
  async preload(spec: PoolSpec): Promise<{ made: boolean; seconds: number; images: PinnedImage[] }> {
    const provider = this.providerFor(spec.provider);
    provider.requireAccess('apply');
    if (!provider.preload) throw new BuildfleetError('unsupported', `provider ${spec.provider} has nothing to bake`);
    const pinned = await this.pinImages(spec);
    await provider.checkNewNodes(spec, ['n1']);
    return { ...(await provider.preload(spec, pinned)), images: pinned };
  }

  /**
   * A dry run makes every check the apply makes, in the same order, and stops before the first
   * change: the provider first (there is one of that name; this process may use it), then the
   * images, then what the provider must offer for the new nodes.
   */
  async apply(spec: PoolSpec, options: ApplyOptions = {}): Promise<{ plan: PoolPlan; pool?: PoolView }> {
    const provider = this.providerFor(spec.provider);
    provider.requireAccess('apply');
    if (options.mustBeNew && (await this.store.readPool(spec.name) || existsSync(this.store.poolDir(spec.name)))) {
      throw new BuildfleetError('conflict', `pool ${spec.name} already exists in ${this.store.root} (see "buildfleet pool status ${spec.name}")`);
    }
    const pinned = await this.pinImages(spec);
    const plan = await this.plan(spec, pinned);
    await provider.checkNewNodes(spec, plan.add);
    if (options.dryRun) return { plan };
    const now = new Date().toISOString();
    if (plan.createPool) await this.store.claimPool({ spec, createdAt: now, updatedAt: now });
    else await this.store.writePool({ ...(await this.store.requirePool(spec.name)), spec, updatedAt: now });
    if (planIsEmpty(plan)) return { plan, pool: await this.status(spec.name) };

    const limit = pLimit(4);
    try {
      const created = await Promise.allSettled(
        plan.add.map((id) =>
          limit(async () => {
            this.log(`creating node ${spec.name}-${id}`);
            await provider.createNode(spec, id, pinned);
          }),
        ),
      );
      const failed = created.find((result): result is PromiseRejectedResult => result.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (err) {
      // Nothing half-created: the nodes of this apply go, and the pool too if this apply made it.
      this.log(`creating nodes failed; removing what this run created`);
      for (const id of plan.add) await provider.deleteNode(spec.name, id).catch(() => {});
      if (plan.createPool) await this.delete(spec.name).catch(() => {});
      throw err;
    }
    for (const id of plan.update) {
      if (await provider.updateNode(spec, id, pinned)) this.log(`updating node ${spec.name}-${id}`);
    }
    if (options.wait !== false && plan.add.length > 0) await this.waitReady(spec.name, plan.add, options.timeoutMs ?? 600_000);
    // Removed last: the replacements take jobs before the old nodes go.
    await Promise.all(plan.remove.map((id) => limit(() => this.drainAndDelete(spec, id, options.drainTimeoutSeconds))));
    // A new image is a roll, not an update in place: running builds finish on the old nodes.
    if (plan.roll.length > 0) await this.executeRollOf(spec, pinned, options);
    return { plan, pool: await this.status(spec.name) };
  }

  /**
   * Rolls a pool to new images (`pool roll`), surge first: new nodes pre-pull the images and are
   * Ready before old ones are cordoned, drained and deleted (see roll-plan.ts). The pool's
   * record takes the new images once every node has them; a failed new node stops the roll
   * with the old nodes serving, and the record keeps the old images.
   */
  async roll(pool: string, images: string[], options: RollRequest = {}): Promise<{ plan: RollPlan; images: PinnedImage[]; result?: RollResult; pool?: PoolView }> {
    const record = await this.store.requirePool(pool);
    if (images.length === 0) throw new BuildfleetError('usage', 'pool roll: give the new image with --image REF');
    const spec: PoolSpec = { ...record.spec, images };
    const provider = this.providerFor(spec.provider);
    provider.requireAccess('apply');
    const pinned = await this.pinImages(spec);
    const plan = await this.rollPlan(provider, spec, pinned, options.surge);
    await provider.checkNewNodes(spec, plan.add.slice(0, plan.surge));
    if (options.dryRun) return { plan, images: pinned };
    const result = await executeRoll(provider, spec, pinned, plan, this.rollOptions(options));
    await this.store.writePool({ ...(await this.store.requirePool(pool)), spec, updatedAt: new Date().toISOString() });
    return { plan, images: pinned, result, pool: await this.status(pool) };
  }

  private async rollPlan(provider: Provider, spec: PoolSpec, pinned: PinnedImage[], surge = 1): Promise<RollPlan> {
    if (!Number.isInteger(surge) || surge < 1) throw new BuildfleetError('usage', `--surge must be a whole number >= 1, got ${surge}`);
    const nodes = await rollNodes(provider, spec.name, pinned);
    const nextNumber = Math.max(0, ...nodes.map((node) => nodeNumber(node.id))) + 1;
    return planRoll({ desired: spec.nodes, nodes, surge, nextNumber });
  }

  private rollOptions(options: RollRequest): RollOptions {
    return {
      ...(options.timeoutMs !== undefined && { readyTimeoutMs: options.timeoutMs }),
      ...(options.drainTimeoutSeconds !== undefined && { drainTimeoutSeconds: options.drainTimeoutSeconds }),
      log: this.log,
      ...(this.options.pollMs !== undefined && { pollMs: this.options.pollMs }),
    };
  }

  private async executeRollOf(spec: PoolSpec, pinned: PinnedImage[], options: ApplyOptions): Promise<RollResult> {
    const provider = this.providerFor(spec.provider);
    return executeRoll(provider, spec, pinned, await this.rollPlan(provider, spec, pinned, options.surge), this.rollOptions(options));
  }

  async resize(pool: string, nodes: number, options: ApplyOptions = {}): Promise<{ plan: PoolPlan; pool?: PoolView }> {
    const record = await this.store.requirePool(pool);
    return this.apply({ ...record.spec, nodes }, options);
  }

  /** Cordons the node, lets its running builds finish (up to the drain timeout), then removes it. */
  async drainAndDelete(spec: PoolSpec, id: string, drainTimeoutSeconds = spec.remediation.drainTimeoutSeconds): Promise<void> {
    const provider = this.providerFor(spec.provider);
    // Best effort: a half-made node takes no jobs anyway, and goes all the same.
    await provider.cordon(spec.name, id, 'scale-down').catch(() => {});
    await drain(provider, spec.name, [id], Date.now() + drainTimeoutSeconds * 1000, this.log, 1000);
    this.log(`deleting node ${spec.name}-${id}`);
    await provider.deleteNode(spec.name, id);
  }

  async waitReady(pool: string, ids: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const views = (await this.status(pool)).nodes.filter((node) => ids.includes(node.id));
      const summary = views.map((node) => `${node.name} ${node.phase}`).join(', ');
      if (summary !== last) this.log(summary);
      last = summary;
      if (views.every((node) => node.phase === 'Ready')) return;
      const dead = views.find((node) => !node.agentAlive && node.phase !== 'Ready');
      if (dead) throw new BuildfleetError('environment', `${dead.name}: its agent died in phase ${dead.phase} (see its logs/agent.log)`);
      if (Date.now() > deadline) throw new BuildfleetError('environment', `nodes not Ready after ${Math.round(timeoutMs / 1000)} s: ${summary}`);
      await sleep(100);
    }
  }

  /** Each node as its provider describes it, with what its agent reports through the provider's status source. */
  async status(pool: string): Promise<PoolView> {
    const record = await this.store.requirePool(pool);
    const provider = this.providerFor(record.spec.provider);
    const nodes: NodeView[] = [];
    for (const id of await provider.listNodes(pool)) {
      const node = await provider.describeNode(pool, id);
      const status = await provider.status.read(pool, id);
      nodes.push({
        name: node.name,
        id,
        phase: status?.phase ?? 'Unknown',
        cordoned: node.cordoned,
        agentAlive: node.agentAlive,
        conditions: status?.conditions ?? {},
        phaseTimes: phaseTimes(status?.transitions ?? [], status ?? {}),
        transitions: status?.transitions ?? [],
        images: status?.images ?? [],
        runningJobs: node.runningJobs,
        ...(status?.metricsUrl && { metricsUrl: status.metricsUrl }),
        disks: node.disks,
        details: node.details,
      });
    }
    return { name: pool, provider: record.spec.provider, desiredNodes: record.spec.nodes, images: record.spec.images, nodes };
  }

  /** Removes every node and the pool itself, whatever state a crash left it in. */
  async delete(pool: string): Promise<{ nodes: number } & Released> {
    const dir = await this.store.ownedPoolDir(pool);
    if (!dir) throw new BuildfleetError('not-found', `no pool named ${pool} in ${this.store.root}`);
    // The record is written before any node (a pool dir appears whole); a damaged one still goes.
    const record = await this.store.readPool(pool).catch(() => undefined);
    const provider = this.providerFor(record?.spec.provider ?? 'local');
    provider.requireAccess('delete');
    const ids = await provider.listNodes(pool);
    const totals = { nodes: ids.length, processes: 0, mounts: 0, loopDevices: 0 };
    const add = (released: Released) => {
      totals.processes += released.processes;
      totals.mounts += released.mounts;
      totals.loopDevices += released.loopDevices;
    };
    const limit = pLimit(4);
    await Promise.all(
      ids.map((id) =>
        limit(async () => {
          this.log(`deleting node ${pool}-${id}`);
          add(await provider.deleteNode(pool, id));
        }),
      ),
    );
    add(await provider.cleanupPool(pool));
    await this.store.removePoolDir(pool);
    return totals;
  }
}

export type { NodeRecord };
