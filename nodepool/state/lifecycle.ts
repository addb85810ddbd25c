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
};

/** The first time-to-ready of a node, split into phases (later restarts do not count). */
export function phaseTimes(history: readonly Transition[]): PhaseTimes {
  const start = history[0] ? Date.parse(history[0].at) : undefined;
  const first = (phase: NodePhase) => {
    const found = history.find((t) => t.phase === phase);
    return found ? Date.parse(found.at) : undefined;
  };
  const runtime = first('RuntimeReady');
  const ready = first('Ready');
  const times: PhaseTimes = {};
  if (start !== undefined && runtime !== undefined) times.runtimeMs = runtime - start;
  if (runtime !== undefined && ready !== undefined) times.pullMs = ready - runtime;
  if (start !== undefined && ready !== undefined) times.readyMs = ready - start;
  return times;
}
