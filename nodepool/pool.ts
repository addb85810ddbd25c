import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { parseReference } from '../imagebuilder/oci/reference.js';
import type { RegistryOptions } from '../imagebuilder/registry/index.js';
import { openSource } from '../imagebuilder/transports/index.js';
import { type PoolSpec } from './pool-spec/pool-spec.js';
import { phaseTimes, type NodePhase, type PhaseTimes } from './state/lifecycle.js';
import { StateStore, type NodeRecord, type NodeStatus, type PinnedImage } from './state/store.js';
import { planIsEmpty, planPool, settingsKey, type ExistingNode, type PoolPlan } from './plan.js';
import { LocalProvider } from './local/provider.js';
import { freeBytes } from './local/disks.js';
import { runningContainers, nodeCgroupName } from './local/cgroups.js';
import { isAlive } from './local/processes.js';
import { releaseDisksBelow } from './local/cleanup.js';

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
  disks: { runtime: { sizeBytes: number; loopDevice?: string }; workload: { sizeBytes: number; loopDevice?: string; mountPoint: string } };
  dockerSocket: string;
};

export type PoolView = { name: string; provider: string; desiredNodes: number; images: string[]; nodes: NodeView[] };

export type ManagerOptions = {
  registry?: RegistryOptions;
  log?: (line: string) => void;
};

export type ApplyOptions = { dryRun?: boolean; wait?: boolean; timeoutMs?: number; mustBeNew?: boolean };

export class PoolManager {
  readonly provider: LocalProvider;
  private readonly log: (line: string) => void;

  constructor(
    readonly store: StateStore,
    private readonly options: ManagerOptions = {},
  ) {
    this.provider = new LocalProvider(store);
    this.log = options.log ?? (() => {});
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

  async existingNodes(pool: string): Promise<ExistingNode[]> {
    const nodes: ExistingNode[] = [];
    for (const id of await this.store.listNodeIds(pool)) {
      const record = await this.store.readNode(pool, id);
      const status = await this.store.readStatus(pool, id);
      nodes.push({
        id,
        phase: status?.phase,
        runtimeDiskBytes: record?.disks.runtime.sizeBytes ?? 0,
        workloadDiskBytes: record?.disks.workload.sizeBytes ?? 0,
        settingsKey: record ? settingsKey({ ...record.spec } as PoolSpec, record.images.map((image) => image.pinned)) : '',
      });
    }
    return nodes;
  }

  async plan(spec: PoolSpec, pinned: PinnedImage[]): Promise<PoolPlan> {
    const record = await this.store.readPool(spec.name);
    return planPool(spec, record ? await this.existingNodes(spec.name) : undefined, pinned.map((image) => image.pinned));
  }

  /** What the host must offer before anything else is asked of it. */
  checkProvider(spec: PoolSpec): void {
    if (spec.provider !== 'local') throw new BuildfleetError('unsupported', `provider ${spec.provider} is not available yet; use provider: local`);
    if (process.getuid?.() !== 0) throw new BuildfleetError('environment', 'the local provider needs root (loop devices, mounts, dockerd): run as root');
  }

  /** Checks what must hold before anything is created, so a bad request creates nothing. */
  async preflight(spec: PoolSpec, plan: PoolPlan): Promise<void> {
    const needed = plan.add.length * (spec.disks.runtime.size + spec.disks.workload.size);
    if (needed > 0) {
      const free = await freeBytes(existsSync(this.store.root) ? this.store.root : '/');
      if (needed > free) {
        throw new BuildfleetError('environment', `${plan.add.length} node(s) need ${gib(needed)} GiB of disk but ${this.store.root} has ${gib(free)} GiB free: use smaller disks or fewer nodes`);
      }
    }
    // Refuse early rather than fail inside containerd (the socket path check lives in the store).
    this.store.paths(spec.name, plan.add[0] ?? 'n1');
  }

  /** A dry run makes every check the apply makes, in the same order, and stops before the first change. */
  async apply(spec: PoolSpec, options: ApplyOptions = {}): Promise<{ plan: PoolPlan; pool?: PoolView }> {
    this.checkProvider(spec);
    if (options.mustBeNew && (await this.store.readPool(spec.name) || existsSync(this.store.poolDir(spec.name)))) {
      throw new BuildfleetError('conflict', `pool ${spec.name} already exists in ${this.store.root} (see "buildfleet pool status ${spec.name}")`);
    }
    const pinned = await this.pinImages(spec);
    const plan = await this.plan(spec, pinned);
    await this.preflight(spec, plan);
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
            await this.provider.createNode(spec, id, pinned);
          }),
        ),
      );
      const failed = created.find((result): result is PromiseRejectedResult => result.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (err) {
      // Nothing half-created: the nodes of this apply go, and the pool too if this apply made it.
      this.log(`creating nodes failed; removing what this run created`);
      for (const id of plan.add) await this.provider.deleteNode(spec.name, id).catch(() => {});
      if (plan.createPool) await this.delete(spec.name).catch(() => {});
      throw err;
    }
    for (const id of plan.update) {
      const record = await this.store.readNode(spec.name, id);
      if (!record) continue;
      this.log(`updating node ${record.name}`);
      await this.store.writeNode({ ...record, images: pinned, spec: { probe: spec.probe, saturation: spec.saturation, remediation: spec.remediation, liveRestore: spec.liveRestore, insecureRegistries: spec.insecureRegistries } });
    }
    if (options.wait !== false && plan.add.length > 0) await this.waitReady(spec.name, plan.add, options.timeoutMs ?? 600_000);
    // Removed last: the replacements take jobs before the old nodes go.
    await Promise.all(plan.remove.map((id) => limit(() => this.drainAndDelete(spec, id))));
    return { plan, pool: await this.status(spec.name) };
  }

  async resize(pool: string, nodes: number, options: ApplyOptions = {}): Promise<{ plan: PoolPlan; pool?: PoolView }> {
    const record = await this.store.requirePool(pool);
    return this.apply({ ...record.spec, nodes }, options);
  }

  /** Cordons the node, lets its running builds finish (up to the drain timeout), then removes it. */
  async drainAndDelete(spec: PoolSpec, id: string): Promise<void> {
    const paths = this.store.paths(spec.name, id);
    await writeFile(paths.cordon, `${new Date().toISOString()} scale-down\n`).catch(() => {});
    const deadline = Date.now() + spec.remediation.drainTimeoutSeconds * 1000;
    while ((await runningContainers(nodeCgroupName(this.store.nodeDir(spec.name, id)))).length > 0 && Date.now() < deadline) {
      this.log(`waiting for builds on ${spec.name}-${id} to finish`);
      await sleep(1000);
    }
    this.log(`deleting node ${spec.name}-${id}`);
    await this.provider.deleteNode(spec.name, id);
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

  async status(pool: string): Promise<PoolView> {
    const record = await this.store.requirePool(pool);
    const nodes: NodeView[] = [];
    for (const id of await this.store.listNodeIds(pool)) {
      const node = await this.store.readNode(pool, id);
      const status = await this.store.readStatus(pool, id);
      const paths = this.store.paths(pool, id);
      const agentPid = Number((await readFile(paths.agentPid, 'utf8').catch(() => '')).trim());
      nodes.push({
        name: node?.name ?? `${pool}-${id}`,
        id,
        phase: status?.phase ?? 'Unknown',
        cordoned: existsSync(paths.cordon),
        agentAlive: agentPid > 0 && isAlive(agentPid),
        conditions: status?.conditions ?? {},
        phaseTimes: phaseTimes(status?.transitions ?? []),
        transitions: status?.transitions ?? [],
        images: status?.images ?? [],
        runningJobs: (await runningContainers(nodeCgroupName(this.store.nodeDir(pool, id)))).length,
        ...(status?.metricsUrl && { metricsUrl: status.metricsUrl }),
        disks: {
          runtime: { sizeBytes: node?.disks.runtime.sizeBytes ?? 0, ...(node?.disks.runtime.loopDevice && { loopDevice: node.disks.runtime.loopDevice }) },
          workload: { sizeBytes: node?.disks.workload.sizeBytes ?? 0, mountPoint: paths.workloadMount, ...(node?.disks.workload.loopDevice && { loopDevice: node.disks.workload.loopDevice }) },
        },
        dockerSocket: paths.dockerSocket,
      });
    }
    return { name: pool, provider: record.spec.provider, desiredNodes: record.spec.nodes, images: record.spec.images, nodes };
  }

  /** Removes every node and the pool itself, whatever state a crash left it in. */
  async delete(pool: string): Promise<{ nodes: number; processes: number; mounts: number; loopDevices: number }> {
    const dir = await this.store.ownedPoolDir(pool);
    if (!dir) throw new BuildfleetError('not-found', `no pool named ${pool} in ${this.store.root}`);
    if (process.getuid?.() !== 0) throw new BuildfleetError('environment', 'deleting a local pool needs root (mounts, loop devices): run as root');
    const ids = await this.store.listNodeIds(pool);
    const totals = { nodes: ids.length, processes: 0, mounts: 0, loopDevices: 0 };
    const limit = pLimit(4);
    await Promise.all(
      ids.map((id) =>
        limit(async () => {
          this.log(`deleting node ${pool}-${id}`);
          const report = await this.provider.deleteNode(pool, id);
          totals.processes += report.processes;
          totals.mounts += report.mounts;
          totals.loopDevices += report.loopDevices;
        }),
      ),
    );
    // Disks outside node dirs (a node dir renamed by hand, a half-made one): below the pool dir as a whole.
    const rest = await releaseDisksBelow(dir);
    totals.mounts += rest.mounts;
    totals.loopDevices += rest.loopDevices;
    await this.store.removePoolDir(pool);
    return totals;
  }
}

function gib(bytes: number): string {
  return (bytes / 1024 ** 3).toFixed(1);
}

export type { NodeRecord };
