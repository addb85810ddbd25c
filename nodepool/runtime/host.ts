import type { ContainerRuntime } from './container-runtime.js';

/**
 * The daemons a container runtime runs in, where the node agent owns them: the local provider
 * starts a containerd and a dockerd per node (`nodepool/local/runtime.ts`), so its agent starts
 * them, restarts a hung dockerd and stops them with the node. An agent on a machine that runs
 * its own runtime (a Kubernetes DaemonSet) gets a host that starts nothing and only connects.
 */
/** Where a stopped runtime keeps its images, for a pre-pull that writes them there itself. */
export type RuntimeImageStore = { kind: 'docker-overlay2'; dataRoot: string };

export type RuntimeStartOptions = {
  /**
   * Runs before the runtime starts (beside whatever else starts first), with the store it will
   * read: a host that cannot offer one (it connects to a running runtime) never calls it. Must
   * not reject.
   */
  beforeRuntime?: (store: RuntimeImageStore) => Promise<void>;
};

export interface RuntimeHost {
  /** What answers once start() returned and what restart() restarts, for the node's phase reasons ('containerd and dockerd', 'dockerd'). */
  readonly names: { started: string; restarted: string };
  /** Starts the daemons (if any) and returns the runtime's client once the runtime answers. */
  start(options?: RuntimeStartOptions): Promise<ContainerRuntime>;
  /** Remediation of a hung runtime: kill its daemon and start it again (with live-restore, containers keep running). */
  restart(): Promise<void>;
  /** Ids of the node's containers still running, found without asking the runtime (it may be hung): a drain waits for none. */
  runningWorkloads(): Promise<string[]>;
  /** Stops the daemons started (none, for a host that started none). */
  stop(): Promise<void>;
}
