import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BuildfleetError } from '../../imagebuilder/oci/errors.js';
import type { PoolSpec } from '../spec/spec.js';
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
  spec: Pick<PoolSpec, 'probe' | 'saturation' | 'remediation' | 'liveRestore' | 'insecureRegistries'>;
};

export type ConditionState = { status: boolean; since: string; reason?: string };

export type NodeStatus = {
  phase: NodePhase;
  transitions: Transition[];
  conditions: Partial<Record<'RuntimeHealthy' | 'RuntimeDiskSaturated' | 'WorkloadDiskSaturated', ConditionState>>;
  images: Array<{ pinned: string; present: boolean; pullMs?: number; error?: string }>;
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
  };
}
export type NodePaths = ReturnType<typeof nodePaths>;

const SOCKET_PATH_MAX = 107;

export class StateStore {
  constructor(readonly root: string) {}

  poolDir(pool: string): string {
    return join(this.root, 'pools', pool);
  }

  nodeDir(pool: string, id: string): string {
    return join(this.poolDir(pool), 'nodes', id);
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
    return (await readdir(join(this.root, 'pools')).catch(() => [] as string[])).sort();
  }

  async readPool(pool: string): Promise<PoolRecord | undefined> {
    return readJson<PoolRecord>(join(this.poolDir(pool), 'pool.json'));
  }

  async requirePool(pool: string): Promise<PoolRecord> {
    const record = await this.readPool(pool);
    if (!record) {
      if (existsSync(this.poolDir(pool))) {
        throw new BuildfleetError('not-found', `pool ${pool} was never completely created (a crashed run?): remove what it left with "buildfleet pool delete ${pool}"`);
      }
      throw new BuildfleetError('not-found', `no pool named ${pool} in ${this.root}`);
    }
    return record;
  }

  /** Claims the pool's name: fails (exit 9) when any pool dir of that name exists, even a half-deleted one. */
  async claimPool(record: PoolRecord): Promise<void> {
    await mkdir(join(this.root, 'pools'), { recursive: true });
    try {
      await mkdir(this.poolDir(record.spec.name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new BuildfleetError('conflict', `pool ${record.spec.name} already exists in ${this.root} (see "buildfleet pool status ${record.spec.name}")`);
      }
      throw err;
    }
    await mkdir(join(this.poolDir(record.spec.name), 'nodes'));
    await this.writePool(record);
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

  async removePoolDir(pool: string): Promise<void> {
    await rm(this.poolDir(pool), { recursive: true, force: true });
  }
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
