import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'node:http';
import { containerdConfig, dockerdArgs, requireCommands } from '../daemons/engine-config.js';
import { Daemon } from '../daemons/process.js';
import type { NodePaths, NodeRecord } from '../state/store.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import { DockerRuntime } from '../runtime/docker.js';
import type { RuntimeHost, RuntimeStartOptions } from '../runtime/host.js';
import { nodeCgroupName, runningContainers } from './cgroups.js';
import { BudgetKeeper, budgetNodeDaemons, nodeDiskBudgets } from './io-budget.js';

/**
 * Each daemon in a session of its own: the agent's process group is orphaned (the agent is
 * detached), and when a member of an orphaned group exits (runc does, at every container start)
 * while another member is stopped, the kernel sends the whole group SIGHUP and SIGCONT. A
 * stopped dockerd (a hang drill) would be woken and the agent hung up.
 */
const OWN_SESSION = { ownSession: true };

/**
 * A node's container runtime: its own containerd and a dockerd on it, both children of the
 * node's agent (so the agent reaps them and can restart dockerd). The data-root lies on the
 * runtime disk; builds get the workload disk. With live-restore, containers outlive dockerd.
 * The agent knows it only as a RuntimeHost.
 */
export class NodeRuntime implements RuntimeHost {
  readonly names = { started: 'containerd and dockerd', restarted: 'dockerd' };
  private containerd: Daemon | undefined;
  private dockerd: Daemon | undefined;
  private budgetKeeper: BudgetKeeper | undefined;

  constructor(
    private readonly paths: NodePaths,
    private readonly node: NodeRecord,
  ) {}

  /** Starts containerd (and the pre-start step beside it), then dockerd; returns the Docker API client once dockerd answers. */
  async start(options: RuntimeStartOptions = {}, timeoutMs = 60_000): Promise<ContainerRuntime> {
    await requireCommands(['dockerd', 'containerd'], 'docker.io');
    // The Engine API's client loads while the daemons start in their own processes.
    const modem = import('docker-modem');
    await mkdir(this.paths.run, { recursive: true });
    await mkdir(this.paths.logs, { recursive: true });
    // The disks' budgets bind the daemons (this process's children from here on) and the containers.
    const budgets = await nodeDiskBudgets(this.node);
    await budgetNodeDaemons(this.paths.dir, process.pid, budgets);
    this.budgetKeeper = new BudgetKeeper(this.paths.dir, budgets);
    const config = join(this.paths.run, 'containerd.toml');
    await writeFile(config, containerdConfig({ root: this.paths.containerdRoot, state: this.paths.containerdState, socket: this.paths.containerdSocket }));
    this.containerd = new Daemon('containerd', 'containerd', ['--config', config], join(this.paths.logs, 'containerd.log'), process.env, OWN_SESSION);
    // dockerd reads its image store once, as it starts: anything written there goes in before.
    const beforeDockerd = options.beforeRuntime?.({ kind: 'docker-overlay2', dataRoot: this.paths.dataRoot });
    await this.containerd.waitUntil(async () => existsSync(this.paths.containerdSocket), timeoutMs);
    await beforeDockerd;
    await this.startDockerd(timeoutMs);
    this.budgetKeeper.start();
    const { default: Modem } = await modem;
    return new DockerRuntime(new Modem({ socketPath: this.paths.dockerSocket }));
  }

  async startDockerd(timeoutMs = 60_000): Promise<void> {
    // A killed dockerd that nobody reaped leaves its pidfile naming a zombie: dockerd would refuse to start.
    await rm(this.paths.dockerPid, { force: true });
    const args = dockerdArgs({
      containerdSocket: this.paths.containerdSocket,
      dataRoot: this.paths.dataRoot,
      execRoot: this.paths.execRoot,
      socket: this.paths.dockerSocket,
      pidfile: this.paths.dockerPid,
      liveRestore: this.node.spec.liveRestore,
      insecureRegistries: this.node.spec.insecureRegistries,
      // Absolute: runc resolves a relative parent against its own cgroup, which is the node's daemons cgroup.
      cgroupParent: `/${nodeCgroupName(this.paths.dir)}`,
    });
    this.dockerd = new Daemon('dockerd', 'dockerd', args, join(this.paths.logs, 'dockerd.log'), process.env, OWN_SESSION);
    await this.dockerd.waitUntil(() => ping(this.paths.dockerSocket), timeoutMs);
  }

  /** What the field's health monitor does to a hung runtime: SIGKILL (after SIGCONT, for a stopped one). */
  async killDockerd(): Promise<void> {
    if (!this.dockerd) return;
    this.dockerd.child.kill('SIGCONT');
    this.dockerd.child.kill('SIGKILL');
    await this.dockerd.stop(2000);
  }

  /** Kill dockerd and start it again: with live-restore the running containers keep running throughout. */
  async restart(timeoutMs = 60_000): Promise<void> {
    await this.killDockerd();
    await this.startDockerd(timeoutMs);
  }

  /** The node's containers, read from their cgroups: dockerd may be hung. */
  runningWorkloads(): Promise<string[]> {
    return runningContainers(nodeCgroupName(this.paths.dir));
  }

  async stop(): Promise<void> {
    this.budgetKeeper?.stop();
    await this.dockerd?.stop(10_000);
    await this.containerd?.stop(10_000);
  }
}

/** GET /_ping on the engine's socket: true once dockerd answers OK. */
function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
