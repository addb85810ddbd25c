/**
 * A node's lifecycle, pure. Ready is the only phase that takes jobs; every transition is
 * timestamped and kept, so `status` and the time-to-ready benchmark can split a node's start
 * into phases.
 */
export const NODE_PHASES = ['Provisioning', 'RuntimeReady', 'Pulling', 'Ready', 'Cordoned', 'Draining', 'Unhealthy', 'Removing'] as const;
export type NodePhase = (typeof NODE_PHASES)[number];

const ALLOWED: Record<NodePhase, readonly NodePhase[]> = {
  Provisioning: ['RuntimeReady', 'Unhealthy'],
  RuntimeReady: ['Pulling', 'Unhealthy'],
  // A node whose images are all present goes straight from RuntimeReady through Pulling (verify only).
  Pulling: ['Ready', 'Unhealthy', 'Cordoned'],
  Ready: ['Pulling', 'Cordoned', 'Unhealthy'],
  Unhealthy: ['Cordoned', 'Draining', 'Pulling', 'Ready', 'RuntimeReady'],
  Cordoned: ['Draining', 'Ready', 'Pulling', 'Unhealthy'],
  // After a restart the images are verified again before the node is Ready.
  Draining: ['RuntimeReady', 'Pulling', 'Unhealthy', 'Cordoned'],
  Removing: [],
};

export type Transition = { phase: NodePhase; at: string; reason?: string };

export function canTransition(from: NodePhase, to: NodePhase): boolean {
  return to === 'Removing' || ALLOWED[from].includes(to);
}

/** Appends a transition; refuses one the lifecycle does not allow (a bug, not a user error). */
export function transition(history: readonly Transition[], to: NodePhase, at: Date, reason?: string): Transition[] {
  const from = history.at(-1)?.phase;
  if (from === to) return [...history];
  if (from !== undefined && !canTransition(from, to)) throw new Error(`node lifecycle: ${from} -> ${to} is not allowed`);
  return [...history, { phase: to, at: at.toISOString(), ...(reason && { reason }) }];
}

export type PhaseTimes = {
  /** Disks made and mounted, runtime answering: from the start to RuntimeReady. */
  runtimeMs?: number;
  /** From RuntimeReady to the first Ready: pulling and verifying the images. */
  pullMs?: number;
  /** From the start to the first Ready. */
  readyMs?: number;
  /** From the start until the node's agent ran (disks made and mounted): given the agent's start. */
  provisionMs?: number;
  /** From the agent's start to RuntimeReady (containerd and dockerd answering). */
  runtimeUpMs?: number;
  /** Of pullMs, until the last layer was downloaded; given the pulls' download times. */
  downloadMs?: number;
  /** Of pullMs, the rest: decompressing and extracting what was downloaded, verifying. */
  extractMs?: number;
};

/** What the agent records besides transitions that splits a start further (see NodeStatus). */
export type StartMarks = {
  agentStartedAt?: string;
  images?: ReadonlyArray<{ downloadMs?: number }>;
  /** A direct pre-pull before the runtime started (NodeStatus.install). */
  install?: { downloadedAt: string; finishedAt: string };
};

/** The first time-to-ready of a node, split into phases (later restarts do not count). */
export function phaseTimes(history: readonly Transition[], marks: StartMarks = {}): PhaseTimes {
  const start = history[0] ? Date.parse(history[0].at) : undefined;
  const first = (phase: NodePhase) => {
    const found = history.find((t) => t.phase === phase);
    return found ? Date.parse(found.at) : undefined;
  };
  const runtime = first('RuntimeReady');
  const ready = first('Ready');
  const agent = marks.agentStartedAt ? Date.parse(marks.agentStartedAt) : undefined;
  const times: PhaseTimes = {};
  if (start !== undefined && runtime !== undefined) times.runtimeMs = runtime - start;
  if (runtime !== undefined && ready !== undefined) times.pullMs = ready - runtime;
  if (start !== undefined && ready !== undefined) times.readyMs = ready - start;
  if (start !== undefined && agent !== undefined && runtime !== undefined && start <= agent && agent <= runtime) {
    times.provisionMs = agent - start;
    times.runtimeUpMs = runtime - agent;
  }
  const install = marks.install && { downloaded: Date.parse(marks.install.downloadedAt), finished: Date.parse(marks.install.finishedAt) };
  if (install && agent !== undefined && ready !== undefined && agent <= install.downloaded && install.downloaded <= install.finished && install.finished <= ready) {
    // The images went into the runtime's store before the runtime started (containerd started
    // beside it): the start is provision, download, extract, then the runtime's start and the
    // verification by digest, one after another.
    times.downloadMs = install.downloaded - agent;
    times.extractMs = install.finished - install.downloaded;
    times.runtimeUpMs = ready - install.finished;
    return times;
  }
  const downloads = (marks.images ?? []).map((image) => image.downloadMs);
  if (times.pullMs !== undefined && downloads.length > 0 && downloads.every((ms) => ms !== undefined)) {
    // Images are pulled one after another, so their downloads add up; never more than the pull.
    times.downloadMs = Math.min(times.pullMs, downloads.reduce((sum: number, ms) => sum + ms!, 0));
    times.extractMs = times.pullMs - times.downloadMs;
  }
  return times;
}
