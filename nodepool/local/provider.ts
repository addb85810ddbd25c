import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { packageEntry, packageRoot } from '../../imagebuilder/package-root.js';
import { transition } from '../state/lifecycle.js';
import { blobCacheDir, writeNodeStatus, type DiskRecord, type NodeRecord, type StateStore } from '../state/store.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import { nodeSettings, type JobIO, type JobRequest, type JobRun, type NodeDescription, type NodeStatusSource, type Provider, type Released } from '../provider.js';
import { bindWorkloadDir, createDisk, freeBytes } from './disks.js';
import { cleanupNode, nodeProcessFromPidfile, releaseDisksBelow } from './cleanup.js';
import { joinCgroup, nodeCgroupName, nodeDaemonsCgroupName, runningContainers, sweepNodeCgroups } from './cgroups.js';
import { isAlive } from './processes.js';
import { jobsInFlight, runContainerJob } from './jobs.js';
import { bakeKey, DiskStore, removeDiskStoreIfUnused } from './disk-store.js';
import { SharedBlobCache } from '../prepull/blob-cache.js';
import { bakeImages } from './bake.js';

/**
 * The local provider, the embedded default: a node is two loop-mounted ext4 disks on this host
 * and an agent process that runs the node's own containerd and dockerd. Nodes outlive the
 * process that made them; everything about them is under the node dir, so it can be found
 * and removed from any process, even after a crash.
 */

/** How to start a node's agent: its light entry, built, or under tsx when running from source (tests). */
function agentCommand(nodeDir: string): { command: string; args: string[]; cwd: string } {
  const entry = packageEntry('nodepool/agent/main.ts');
  return { command: process.execPath, args: [...entry.nodeArgs, entry.file, '--node-dir', nodeDir], cwd: packageRoot };
}

export class LocalProvider implements Provider {
  /** What each node's agent writes: its status.json. */
  readonly status: NodeStatusSource;

  constructor(private readonly store: StateStore) {
    this.status = { read: (pool, id) => store.readStatus(pool, id) };
  }

  requireAccess(command: 'apply' | 'delete'): void {
    if (process.getuid?.() === 0) return;
    throw new BuildfleetError(
      'environment',
      command === 'delete' ? 'deleting a local pool needs root (mounts, loop devices): run as root' : 'the local provider needs root (loop devices, mounts, dockerd): run as root',
    );
  }

  async checkNewNodes(spec: PoolSpec, ids: string[]): Promise<void> {
    const needed = ids.length * (spec.disks.runtime.size + (spec.disks.layout === 'single' ? 0 : spec.disks.workload.size));
    if (needed > 0) {
      const free = await freeBytes(existsSync(this.store.root) ? this.store.root : '/');
      if (needed > free) {
        throw new BuildfleetError('environment', `${ids.length} node(s) need ${gib(needed)} GiB of disk but ${this.store.root} has ${gib(free)} GiB free: use smaller disks or fewer nodes`);
      }
    }
    // Refuse early rather than fail inside containerd (the socket path check lives in the store).
    this.store.paths(spec.name, ids[0] ?? 'n1');
    if (spec.prepull.mode === 'preloaded-disk' && ids.length > 0) {
      const xfs = await execa('sh', ['-c', 'command -v mkfs.xfs'], { reject: false });
      if (xfs.exitCode !== 0) throw new BuildfleetError('environment', 'prepull.mode preloaded-disk needs mkfs.xfs (Debian package xfsprogs) for its copy-on-write disk store');
    }
  }

  /**
   * Provisions one node: status Provisioning first (its clock starts there), then both disks in
   * parallel, then the agent (detached, so the node outlives this process). Returns once the
   * agent runs; the agent takes the node through RuntimeReady and Pulling to Ready.
   */
  async createNode(spec: PoolSpec, id: string, images: NodeRecord['images']): Promise<void> {
    const paths = this.store.paths(spec.name, id);
    await mkdir(paths.dir, { recursive: true });
    await mkdir(paths.logs, { recursive: true });
    await mkdir(paths.run, { recursive: true });
    const createdAt = new Date();
    const single = spec.disks.layout === 'single';
    let node: NodeRecord = {
      pool: spec.name,
      id,
      name: `${spec.name}-${id}`,
      createdAt: createdAt.toISOString(),
      disks: {
        runtime: { role: 'runtime', file: paths.runtimeImage, mountPoint: paths.runtimeMount, sizeBytes: spec.disks.runtime.size, budget: ioBudget(spec.disks.runtime) },
        // A single-disk node's work dirs live on its runtime disk: no file, no size of their own.
        workload: single
          ? { role: 'workload', file: paths.runtimeImage, mountPoint: paths.workloadMount, sizeBytes: 0, budget: ioBudget(spec.disks.runtime) }
          : { role: 'workload', file: paths.workloadImage, mountPoint: paths.workloadMount, sizeBytes: spec.disks.workload.size, budget: ioBudget(spec.disks.workload) },
      },
      images,
      spec: nodeSettings(spec),
    };
    await this.store.writeNode(node);
    await writeNodeStatus(paths.dir, { phase: 'Provisioning', transitions: transition([], 'Provisioning', createdAt, 'node created'), conditions: {}, images: [], updatedAt: createdAt.toISOString() });
    // A preloaded runtime disk: a copy-on-write clone of the disk baked for these digests.
    const runtimeClone = spec.prepull.mode === 'preloaded-disk' ? await this.cloneBakedDisk(spec, id, images) : undefined;
    const [runtime, workload] = await Promise.all(
      (single ? (['runtime'] as const) : (['runtime', 'workload'] as const)).map((role) =>
        createDisk(
          node.disks[role],
          spec.disks[role],
          async (loopDevice) => {
            node = { ...node, disks: { ...node.disks, [role]: { ...node.disks[role], loopDevice } } };
            await this.store.writeNode(node);
          },
          role === 'runtime' && runtimeClone ? { clone: runtimeClone } : {},
        ),
      ),
    );
    node = { ...node, disks: { runtime: runtime!, workload: workload ?? (await bindWorkloadDir(runtime!, node.disks.workload)) } };
    await this.store.writeNode(node);
    await mkdir(join(paths.workloadMount, 'jobs'), { recursive: true });
    await this.startAgent(node);
  }

  /**
   * Bakes the pool's runtime disk once per set of image digests (and disk size): a fresh disk
   * whose data-root holds the images, pulled by a throwaway engine. Several nodes of one apply
   * share one bake. Baking before the first node is what `pool bake` does on its own.
   */
  async preload(spec: PoolSpec, images: NodeRecord['images']): Promise<{ made: boolean; seconds: number }> {
    if (spec.prepull.mode !== 'preloaded-disk') throw new BuildfleetError('usage', `pool ${spec.name}: prepull.mode is ${spec.prepull.mode}; only preloaded-disk bakes a disk`);
    const { baked, seconds } = await this.bake(spec, images);
    return { made: baked, seconds };
  }

  private async bake(spec: PoolSpec, images: NodeRecord['images']): Promise<{ path: string; baked: boolean; seconds: number }> {
    const key = bakeKey(images, spec.disks.runtime.size);
    let pending = this.bakes.get(key);
    if (!pending) {
      const started = performance.now();
      pending = DiskStore.open(this.store.root)
        .then(async (store) => {
          // A pool that exists keeps its bake; one baked ahead of its first apply is named at that apply.
          const pool = (await this.store.readPool(spec.name)) ? spec.name : undefined;
          return store.bake(pool, key, spec.disks.runtime.size, (mountPoint, scratch) => bakeImages(mountPoint, scratch, images, spec.insecureRegistries));
        })
        .then((result) => ({ ...result, seconds: (performance.now() - started) / 1000 }));
      this.bakes.set(key, pending);
      pending.catch(() => this.bakes.delete(key));
    }
    return pending;
  }

  private readonly bakes = new Map<string, Promise<{ path: string; baked: boolean; seconds: number }>>();

  private async cloneBakedDisk(spec: PoolSpec, id: string, images: NodeRecord['images']): Promise<string> {
    const { path } = await this.bake(spec, images);
    return (await DiskStore.open(this.store.root)).clone(path, spec.name, id);
  }

  async startAgent(node: NodeRecord): Promise<number> {
    const paths = this.store.paths(node.pool, node.id);
    const { command, args, cwd } = agentCommand(paths.dir);
    const log = openSync(join(paths.logs, 'agent.log'), 'a');
    let pid: number | undefined;
    try {
      const child = spawn(command, args, { cwd, detached: true, stdio: ['ignore', log, log], env: { ...process.env, BUILDFLEET_AGENT: '1' } });
      child.unref();
      pid = child.pid;
    } finally {
      closeSync(log);
    }
    if (!pid) throw new BuildfleetError('environment', `${node.name}: cannot start its agent (${command})`);
    // At once, long before the agent (still loading) starts a daemon: all it starts is then the node's.
    // The agent joins again itself, for agents started by hand.
    await joinCgroup(nodeDaemonsCgroupName(paths.dir), pid);
    // Wait until the agent has taken over (its pidfile), or report why it died.
    const deadline = Date.now() + 30_000;
    while (!existsSync(paths.agentPid)) {
      if (!isAlive(pid)) {
        const tail = (await readFile(join(paths.logs, 'agent.log'), 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ');
        throw new BuildfleetError('environment', `${node.name}: its agent exited during start-up: ${tail}`);
      }
      if (Date.now() > deadline) throw new BuildfleetError('environment', `${node.name}: its agent did not start within 30 s (see ${join(paths.logs, 'agent.log')})`);
      await sleep(20);
    }
    return pid;
  }

  /** The agent reads node.json again at its next probe and verifies the new images before Ready. */
  async updateNode(spec: PoolSpec, id: string, images: NodeRecord['images']): Promise<boolean> {
    const record = await this.store.readNode(spec.name, id);
    if (!record) return false;
    await this.store.writeNode({ ...record, images, spec: nodeSettings(spec) });
    return true;
  }

  listNodes(pool: string): Promise<string[]> {
    return this.store.listNodeIds(pool);
  }

  async describeNode(pool: string, id: string): Promise<NodeDescription> {
    const node = await this.store.readNode(pool, id);
    const paths = this.store.paths(pool, id);
    const agentPid = Number((await readFile(paths.agentPid, 'utf8').catch(() => '')).trim());
    return {
      id,
      name: node?.name ?? `${pool}-${id}`,
      ...(node && { assigned: { images: node.images, settings: node.spec } }),
      disks: { runtime: { sizeBytes: node?.disks.runtime.sizeBytes ?? 0 }, workload: { sizeBytes: node?.disks.workload.sizeBytes ?? 0, mountPoint: paths.workloadMount } },
      cordoned: existsSync(paths.cordon),
      agentAlive: agentPid > 0 && isAlive(agentPid),
      // From the containers' cgroups (a hung dockerd cannot answer, the kernel can), and the jobs
      // whose clients have not read their end yet (jobs.ts): whichever counts more.
      runningJobs: Math.max((await runningContainers(nodeCgroupName(paths.dir))).length, await jobsInFlight(paths.dir)),
      details: {
        dockerSocket: paths.dockerSocket,
        ...(node?.disks.runtime.loopDevice && { runtimeLoopDevice: node.disks.runtime.loopDevice }),
        ...(node?.disks.workload.loopDevice && { workloadLoopDevice: node.disks.workload.loopDevice }),
      },
    };
  }

  /** A file in the node dir: describeNode reports it, so `pool exec` passes the node by. */
  async cordon(pool: string, id: string, reason: string): Promise<void> {
    await writeFile(this.store.paths(pool, id).cordon, `${new Date().toISOString()} ${reason}\n`);
  }

  runJob(pool: string, id: string, job: JobRequest, io: JobIO): Promise<JobRun> {
    const paths = this.store.paths(pool, id);
    return runContainerJob({ pool, node: `${pool}-${id}`, nodeDir: paths.dir, dockerSocket: paths.dockerSocket, workloadMount: paths.workloadMount }, job, io);
  }

  /** Disks outside node dirs (a node dir renamed by hand, a half-made one): below the pool dir as a whole. */
  async cleanupPool(pool: string): Promise<Released> {
    const released = await releaseDisksBelow(this.store.poolDir(pool));
    const processes = await sweepNodeCgroups(this.store.poolDir(pool));
    // Preloaded disks: the pool's clones and bakes in the disk store, and the store once unused.
    if (await DiskStore.mounted(this.store.root)) {
      released.loopDevices += await (await DiskStore.open(this.store.root)).releasePool(pool);
    }
    await removeDiskStoreIfUnused(this.store.root);
    // The blobs the pools' nodes shared: kept while another pool may start nodes from them.
    if ((await this.store.listPools()).every((other) => other === pool)) await new SharedBlobCache(blobCacheDir(this.store.root)).remove();
    return { processes, ...released };
  }

  /** Asks the agent to stop (it stops its dockerd), then removes whatever is left below the node dir. */
  async deleteNode(pool: string, id: string): Promise<Released> {
    const paths = this.store.paths(pool, id);
    const agentPid = await nodeProcessFromPidfile(paths.dir, paths.agentPid);
    if (agentPid) {
      process.kill(agentPid, 'SIGTERM');
      const deadline = Date.now() + 15_000;
      while (isAlive(agentPid) && Date.now() < deadline) await sleep(50);
    }
    // The agent, sole writer of status.json, is gone: the last transition is ours to write.
    const status = await this.store.readStatus(pool, id);
    if (status) await writeNodeStatus(paths.dir, { ...status, phase: 'Removing', transitions: transition(status.transitions, 'Removing', new Date(), 'node deleted'), updatedAt: new Date().toISOString() });
    const report = await cleanupNode(paths.dir);
    // A preloaded runtime disk is a clone in the disk store, outside the node dir.
    if (await DiskStore.mounted(this.store.root)) report.loopDevices += await (await DiskStore.open(this.store.root)).releaseNode(pool, id);
    await rm(paths.dir, { recursive: true, force: true });
    return report;
  }
}

function ioBudget(disk: PoolSpec['disks']['runtime']): NonNullable<DiskRecord['budget']> {
  return { readBytesPerSecond: disk.readBytesPerSecond, writeBytesPerSecond: disk.writeBytesPerSecond, iops: disk.iops };
}

function gib(bytes: number): string {
  return (bytes / 1024 ** 3).toFixed(1);
}
