import type { PinnedImage } from '../state/store.js';

/**
 * What detectors report, in node-problem-detector's vocabulary: problems (conditions that are
 * True while the problem exists), events (something happened) and observations (measurements).
 * Detectors report to a DetectorSink and know nothing of the outputs; the agent keeps the
 * node's conditions and hands everything to the exporters.
 */

/** A problem condition as a detector sees it; the agent adds its transition time. */
export type Problem = {
  /** The condition's type, e.g. RuntimeUnhealthy or WorkloadDiskSaturated: a string, so a new detector brings its own. */
  type: string;
  /** True while the problem exists. */
  present: boolean;
  /** One CamelCase word, as Kubernetes condition reasons are (DiskBusy). */
  reason: string;
  /** The same for people: what was measured. */
  message: string;
};

export type Observation =
  | { kind: 'probe'; ok: boolean; latencyMs: number }
  | { kind: 'disk-space'; disk: string; freeBytes: number; freeInodes: number }
  /** Over the disk's window, once it has one; `saturated` is its condition after this reading. */
  | { kind: 'disk-load'; disk: string; utilization: number; queueDepth: number; saturated: boolean }
  /**
   * An image verified or pulled (`seconds` it took; of which `downloadSeconds` until its last
   * layer was downloaded, when the runtime reports layers), or a failed attempt (`error`).
   */
  | { kind: 'image'; index: number; image: PinnedImage; present: true; seconds: number; downloadSeconds?: number; downloadedBytes?: number }
  | { kind: 'image'; index: number; image: PinnedImage; present: false; error: string }
  | { kind: 'remediation'; action: 'cordon' | 'restart' | 'suppressed' };

export type EventFields = Record<string, unknown>;

export interface DetectorSink {
  problem(problem: Problem): void;
  /** One line of the node's event log; names and fields are what events.jsonl readers match. */
  event(name: string, fields: EventFields): void;
  observe(observation: Observation): void;
}
