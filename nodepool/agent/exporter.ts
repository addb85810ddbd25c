import type { NodeCondition, NodeStatus } from '../state/store.js';
import type { EventFields, Observation } from './problems.js';

/**
 * An exporter turns what the detectors found into one output, as node-problem-detector's
 * exporters do: the status file, the event log and Prometheus today (`exporters/`), Kubernetes
 * NodeConditions next, as one more file there. Every method is optional: an exporter takes
 * what its output shows.
 */
export interface Exporter {
  /** A problem condition changed status (True: the problem exists; False: it is gone). */
  conditionChanged?(type: string, condition: NodeCondition): void;
  event?(name: string, fields: EventFields): void;
  observe?(observation: Observation): void;
  /**
   * The node's whole status after any change (phase, transitions, conditions, images). Resolves
   * once published; the object is the agent's live one, so a writer that lags writes the newest.
   */
  statusChanged?(status: Readonly<NodeStatus>): Promise<void> | void;
}

/** Several exporters as one: each call goes to every exporter, in the order given. */
export class FanOut implements Required<Exporter> {
  constructor(private readonly exporters: readonly Exporter[]) {}

  conditionChanged(type: string, condition: NodeCondition): void {
    for (const exporter of this.exporters) exporter.conditionChanged?.(type, condition);
  }

  event(name: string, fields: EventFields): void {
    for (const exporter of this.exporters) exporter.event?.(name, fields);
  }

  observe(observation: Observation): void {
    for (const exporter of this.exporters) exporter.observe?.(observation);
  }

  /** Never rejects: a failed publication becomes a `status-write-failed` event, and the next status is published all the same. */
  async statusChanged(status: Readonly<NodeStatus>): Promise<void> {
    await Promise.all(
      this.exporters.map(async (exporter) => {
        try {
          await exporter.statusChanged?.(status);
        } catch (err) {
          this.event('status-write-failed', { error: (err as Error).message });
        }
      }),
    );
  }
}
