import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { packageEntry, packageRoot } from '../../imagebuilder/package-root.js';
import { transition } from '../state/lifecycle.js';
import { writeNodeStatus, type NodeRecord, type StateStore } from '../state/store.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import { createDisk } from './disks.js';
import { cleanupNode, nodeProcessFromPidfile, type CleanupReport } from './cleanup.js';
import { joinCgroup, nodeDaemonsCgroupName } from './cgroups.js';
import { isAlive } from './processes.js';

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

export class LocalProvider {
  constructor(private readonly store: StateStore) {}

  /**
   * Provisions one node: status Provisioning first (its clock starts there), then both disks in
   * parallel, then the agent (detached, so the node outlives this process). Returns once the
   * agent runs; the agent takes the node through RuntimeReady and Pulling to Ready.
   */
  async createNode(spec: PoolSpec, id: string, images: NodeRecord['images']): Promise<NodeRecord> {
    const paths = this.store.paths(spec.name, id);
    await mkdir(paths.dir, { recursive: true });
    await mkdir(paths.logs, { recursive: true });
    await mkdir(paths.run, { recursive: true });
    const createdAt = new Date();
    let node: NodeRecord = {
      pool: spec.name,
      id,
      name: `${spec.name}-${id}`,
      createdAt: createdAt.toISOString(),
      disks: {
        runtime: { role: 'runtime', file: paths.runtimeImage, mountPoint: paths.runtimeMount, sizeBytes: spec.disks.runtime.size },
        workload: { role: 'workload', file: paths.workloadImage, mountPoint: paths.workloadMount, sizeBytes: spec.disks.workload.size },
      },
      images,
      spec: { probe: spec.probe, saturation: spec.saturation, remediation: spec.remediation, liveRestore: spec.liveRestore, insecureRegistries: spec.insecureRegistries },
    };
    await this.store.writeNode(node);
    await writeNodeStatus(paths.dir, { phase: 'Provisioning', transitions: transition([], 'Provisioning', createdAt, 'node created'), conditions: {}, images: [], updatedAt: createdAt.toISOString() });
    const [runtime, workload] = await Promise.all(
      (['runtime', 'workload'] as const).map((role) =>
        createDisk(node.disks[role], spec.disks[role], async (loopDevice) => {
          node = { ...node, disks: { ...node.disks, [role]: { ...node.disks[role], loopDevice } } };
          await this.store.writeNode(node);
        }),
      ),
    );
    node = { ...node, disks: { runtime: runtime!, workload: workload! } };
    await this.store.writeNode(node);
    await mkdir(join(paths.workloadMount, 'jobs'), { recursive: true });
    await this.startAgent(node);
    return node;
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

  /** Asks the agent to stop (it stops its dockerd), then removes whatever is left below the node dir. */
  async deleteNode(pool: string, id: string): Promise<CleanupReport> {
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
    await rm(paths.dir, { recursive: true, force: true });
    return report;
  }
}
