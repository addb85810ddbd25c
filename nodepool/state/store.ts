import { lstat, mkdir, readdir, readFile, realpath, rename, rm, rmdir, unlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { ownedTempName, sweepDeadOwners } from '../../imagebuilder/transports/temp-files.js';
import { checkPoolName, POOL_NAME } from '../pool-spec/pool-name.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import type { NodePhase, Transition } from './lifecycle.js';

/**
 * Pool and node state on disk, so that `status` works from any process and `delete` can clean
 * up after a manager that crashed. Each file has one writer: the manager writes pool.json and
 * node.json, a node's agent writes its status.json (the manager only writes the first one,
 * before the agent starts). Every write is temp file + rename: readers never see half a file.
 *
 *   STATE/pools/POOL/pool.json
 *   STATE/pools/POOL/nodes/nN/{node.json,status.json,events.jsonl,cordon,run/,logs/,runtime/,workload/}
 */

export const DEFAULT_STATE_DIR = '/var/lib/buildfleet';

export function stateDirFrom(option?: string): string {
  return option ?? process.env.BUILDFLEET_STATE_DIR ?? DEFAULT_STATE_DIR;
}

export type PoolRecord = { spec: PoolSpec; createdAt: string; updatedAt: string };

export type DiskRecord = {
  role: 'runtime' | 'workload';
  file: string;
  mountPoint: string;
  sizeBytes: number;
  /** /dev/loopN once attached. */
  loopDevice?: string;
  /** Its I/O budget (the pool spec's), which the agent's saturation signal measures against. */
  budget?: { readBytesPerSecond: number; writeBytesPerSecond: number; iops: number };
};

export type PinnedImage = { reference: string; pinned: string; digest: string };

export type NodeRecord = {
  pool: string;
  /** n1, n2...: short, because unix socket paths under the node dir must stay under 108 bytes. */
  id: string;
  name: string;
  createdAt: string;
  disks: { runtime: DiskRecord; workload: DiskRecord };
  /** The images the node must hold by digest before it is Ready. */
  images: PinnedImage[];
  /** `prepull` is absent in records written before it existed. */
  spec: Pick<PoolSpec, 'probe' | 'saturation' | 'remediation' | 'liveRestore' | 'insecureRegistries'> & { prepull?: PoolSpec['prepull']; cache?: PoolSpec['cache'] };
};

/**
 * A problem condition, as node-problem-detector's and Kubernetes NodeConditions are: status
 * True while the problem exists (RuntimeUnhealthy, WorkloadDiskSaturated). Keyed by its type in
 * NodeStatus.conditions; types are strings, so a new detector brings its own.
 */
export type NodeCondition = {
  status: 'True' | 'False' | 'Unknown';
  /** One CamelCase word (DiskBusy). */
  reason: string;
  /** For people: what was measured or what failed. */
  message: string;
  lastTransitionTime: string;
};

export type NodeStatus = {
  phase: NodePhase;
  transitions: Transition[];
  conditions: Partial<Record<string, NodeCondition>>;
  /** Per image: pull (or verify) time, of which download until its last layer arrived; or the last error. */
  images: Array<{ pinned: string; present: boolean; pullMs?: number; downloadMs?: number; downloadedBytes?: number; error?: string }>;
  /**
   * A direct pre-pull (prepull.mode direct) that wrote the images into the runtime's store before
   * it started: when it began, when its last blob byte arrived, when the images were committed.
   */
  install?: { startedAt: string; downloadedAt: string; finishedAt: string; downloadedBytes: number };
  /** When the node's agent first ran: the end of provisioning (disks made, agent up). */
  agentStartedAt?: string;
  agentPid?: number;
  metricsUrl?: string;
  lastRestartAt?: string;
  updatedAt: string;
};

export async function writeJsonAtomically(path: string, value: unknown): Promise<void> {
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(temp, JSON.stringify(value, null, 2) + '\n');
  await rename(temp, path);
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BuildfleetError('format', `${path}: unreadable state file: ${(err as Error).message}`);
  }
}

/** Where everything of one node lives (all under its node dir, so cleanup can find it by path). */
export function nodePaths(nodeDir: string) {
  const run = join(nodeDir, 'run');
  return {
    dir: nodeDir,
    record: join(nodeDir, 'node.json'),
    status: join(nodeDir, 'status.json'),
    events: join(nodeDir, 'events.jsonl'),
    cordon: join(nodeDir, 'cordon'),
    run,
    logs: join(nodeDir, 'logs'),
    agentPid: join(run, 'agent.pid'),
    containerdSocket: join(run, 'containerd.sock'),
    dockerSocket: join(run, 'docker.sock'),
    dockerPid: join(run, 'docker.pid'),
    execRoot: join(run, 'exec'),
    runtimeImage: join(nodeDir, 'runtime.img'),
    workloadImage: join(nodeDir, 'workload.img'),
    runtimeMount: join(nodeDir, 'runtime'),
    workloadMount: join(nodeDir, 'workload'),
    // On the runtime disk: images and container layers are what `docker ps` waits on.
    dataRoot: join(nodeDir, 'runtime', 'docker'),
    containerdRoot: join(nodeDir, 'runtime', 'containerd'),
    containerdState: join(run, 'containerd-state'),
    // Shared by every node of the state dir (STATE/pools/POOL/nodes/ID): blobs fetched once per host.
    blobCache: blobCacheDir(join(nodeDir, '..', '..', '..', '..')),
  };
}

/** The host's blob cache of a state dir: the direct pre-pull fetches each blob into it once for all nodes. */
export function blobCacheDir(stateRoot: string): string {
  return join(stateRoot, 'blob-cache');
}
export type NodePaths = ReturnType<typeof nodePaths>;

const SOCKET_PATH_MAX = 107;

/** Node ids are n1, n2, ...: never a path of their own. */
export const NODE_ID = /^n[1-9]\d{0,3}$/;

export function checkNodeId(id: string): string {
  if (!NODE_ID.test(id)) throw new BuildfleetError('usage', `${JSON.stringify(id)} is not a node id (n1, n2, ...)`);
  return id;
}

/** A claim in progress (an owned temp name): pool.json and nodes/ made beside the pool dir, then renamed into place. */
const CLAIM_PREFIX = '.claim-';

export class StateStore {
  constructor(readonly root: string) {}

  get poolsDir(): string {
    return join(this.root, 'pools');
  }

  /**
   * Every path of a pool comes from here: only a valid name becomes a path, so no name (`../..`,
   * `.`, '', `a/b`, an absolute path) can make a command act outside `<state-dir>/pools/`.
   */
  poolDir(pool: string): string {
    const dir = join(this.poolsDir, checkPoolName(pool));
    if (dirname(resolve(dir)) !== resolve(this.poolsDir)) throw new BuildfleetError('usage', `${JSON.stringify(pool)} is not a pool name`);
    return dir;
  }

  nodeDir(pool: string, id: string): string {
    return join(this.poolDir(pool), 'nodes', checkNodeId(id));
  }

  paths(pool: string, id: string): NodePaths {
    const paths = nodePaths(this.nodeDir(pool, id));
    // containerd adds ".ttrpc" to its socket path; a longer path fails deep inside containerd.
    if (paths.containerdSocket.length + '.ttrpc'.length > SOCKET_PATH_MAX) {
      throw new BuildfleetError('usage', `state dir ${this.root} is too long: node sockets would exceed ${SOCKET_PATH_MAX} bytes; use a shorter --state-dir`);
    }
    return paths;
  }

  async listPools(): Promise<string[]> {
    return (await readdir(this.poolsDir).catch(() => [] as string[])).filter((name) => POOL_NAME.test(name)).sort();
  }

  /**
   * The pool's dir when it holds a pool record, as a real directory inside the pools dir (not a
   * symlink out of it): the only kind of dir that delete may act on.
   */
  async ownedPoolDir(pool: string): Promise<string | undefined> {
    const dir = this.poolDir(pool);
    const info = await lstat(dir).catch(() => undefined);
    if (!info) return undefined;
    if (!info.isDirectory()) throw new BuildfleetError('conflict', `${dir} is not a directory buildfleet made (a ${info.isSymbolicLink() ? 'symlink' : 'file'}): left as it is`);
    if ((await realpath(dir)) !== join(await realpath(this.poolsDir), pool)) throw new BuildfleetError('conflict', `${dir} resolves outside ${this.poolsDir}: left as it is`);
    if (!existsSync(join(dir, 'pool.json'))) {
      throw new BuildfleetError('conflict', `${dir} holds no pool.json, so it is not a pool buildfleet made (or one damaged by hand): left as it is; look inside and remove it yourself`);
    }
    return dir;
  }

  async readPool(pool: string): Promise<PoolRecord | undefined> {
    return readJson<PoolRecord>(join(this.poolDir(pool), 'pool.json'));
  }

  async requirePool(pool: string): Promise<PoolRecord> {
    const record = await this.readPool(pool);
    if (!record) {
      await this.ownedPoolDir(pool); // a dir of that name that is no pool: says what it is instead
      throw new BuildfleetError('not-found', `no pool named ${pool} in ${this.root}`);
    }
    return record;
  }

  /**
   * Claims the pool's name: fails (exit 9) when a pool dir of that name exists. The dir appears
   * whole, pool record included (made beside it, then renamed), so a crash never leaves a pool
   * dir without the record that lets delete remove it. A claimer killed mid-claim leaves a temp
   * dir named for its pid: the next claim sweeps it.
   */
  async claimPool(record: PoolRecord): Promise<void> {
    const dir = this.poolDir(record.spec.name);
    const taken = () => new BuildfleetError('conflict', `pool ${record.spec.name} already exists in ${this.root} (see "buildfleet pool status ${record.spec.name}")`);
    if (existsSync(dir)) throw taken();
    await mkdir(this.poolsDir, { recursive: true });
    await sweepDeadOwners(this.poolsDir, (prefix) => prefix.startsWith(CLAIM_PREFIX));
    const claim = join(this.poolsDir, ownedTempName(`${CLAIM_PREFIX}${record.spec.name}-`));
    await mkdir(join(claim, 'nodes'), { recursive: true });
    try {
      await writeJsonAtomically(join(claim, 'pool.json'), record);
      await rename(claim, dir);
    } catch (err) {
      await rm(claim, { recursive: true, force: true });
      const code = (err as NodeJS.ErrnoException).code;
      throw code === 'EEXIST' || code === 'ENOTEMPTY' ? taken() : err;
    }
  }

  async writePool(record: PoolRecord): Promise<void> {
    await writeJsonAtomically(join(this.poolDir(record.spec.name), 'pool.json'), record);
  }

  async listNodeIds(pool: string): Promise<string[]> {
    const ids = await readdir(join(this.poolDir(pool), 'nodes')).catch(() => [] as string[]);
    return ids.filter((id) => /^n\d+$/.test(id)).sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
  }

  async readNode(pool: string, id: string): Promise<NodeRecord | undefined> {
    return readJson<NodeRecord>(nodePaths(this.nodeDir(pool, id)).record);
  }

  async writeNode(record: NodeRecord): Promise<void> {
    await writeJsonAtomically(nodePaths(this.nodeDir(record.pool, record.id)).record, record);
  }

  async readStatus(pool: string, id: string): Promise<NodeStatus | undefined> {
    return readJson<NodeStatus>(nodePaths(this.nodeDir(pool, id)).status);
  }

  /** Removes the pool's dir with its record last, so a delete that dies half-way can be run again. */
  async removePoolDir(pool: string): Promise<void> {
    const dir = await this.ownedPoolDir(pool);
    if (!dir) return;
    for (const entry of await readdir(dir)) if (entry !== 'pool.json') await rm(join(dir, entry), { recursive: true, force: true });
    await unlink(join(dir, 'pool.json'));
    await rmdir(dir);
  }
}

/**
 * The node dir an agent was given, checked: `<state-dir>/pools/POOL/nodes/ID` after symlinks are
 * resolved, with a node record naming that same pool and id. An agent acts only on such a dir.
 */
export async function resolveNodeDir(given: string): Promise<string> {
  const dir = await realpath(given).catch(() => {
    throw new BuildfleetError('not-found', `${given}: no such node dir`);
  });
  const id = basename(dir);
  const pool = basename(dirname(dirname(dir)));
  const shaped = basename(dirname(dir)) === 'nodes' && basename(dirname(dirname(dirname(dir)))) === 'pools' && NODE_ID.test(id) && POOL_NAME.test(pool);
  if (!shaped) throw new BuildfleetError('usage', `${given}: not a node dir (<state-dir>/pools/POOL/nodes/nN)`);
  const record = await readNodeRecord(dir);
  if (record.pool !== pool || record.id !== id) throw new BuildfleetError('usage', `${given}: its node.json names ${record.pool}/${record.id}, not ${pool}/${id}`);
  return dir;
}

export async function readNodeRecord(nodeDir: string): Promise<NodeRecord> {
  const record = await readJson<NodeRecord>(nodePaths(nodeDir).record);
  if (!record) throw new BuildfleetError('not-found', `${nodeDir}: no node.json (not a buildfleet node dir)`);
  return record;
}

export async function readNodeStatus(nodeDir: string): Promise<NodeStatus | undefined> {
  return readJson<NodeStatus>(nodePaths(nodeDir).status);
}

export async function writeNodeStatus(nodeDir: string, status: NodeStatus): Promise<void> {
  await writeJsonAtomically(nodePaths(nodeDir).status, status);
}
