import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1NodeCondition } from '@kubernetes/client-node';
import type { Problem } from '../nodepool/agent/problems.js';
import { kubeError } from './client.js';
import { recordNodeEvent, type NodeEvent } from './events.js';

/**
 * The agent's problems as NodeConditions, in node-problem-detector's style: a condition per
 * problem type (RuntimeUnhealthy, RuntimeDiskSaturated, WorkloadDiskSaturated: the agent's own
 * names, `nodepool/agent/`), status True while the problem exists, with reason and message;
 * lastHeartbeatTime on every report, lastTransitionTime only when the status changes. Written
 * through the nodes/status subresource (a strategic merge patch: conditions merge by type, so
 * kubelet's own conditions are left alone), plus an Event on each change.
 */

export type ConditionChange = { type: string; from: string | undefined; to: 'True' | 'False'; reason: string; message: string };

const time = (value: Date | string | undefined) => (value instanceof Date ? value.toISOString() : value);

/** Pure: the conditions to write for these problems, given the node's current ones. */
export function conditionsFor(current: V1NodeCondition[] | undefined, problems: Problem[], now: Date): { conditions: V1NodeCondition[]; changes: ConditionChange[] } {
  const conditions: V1NodeCondition[] = [];
  const changes: ConditionChange[] = [];
  for (const problem of problems) {
    const before = current?.find((condition) => condition.type === problem.type);
    const status = problem.present ? 'True' : 'False';
    const changed = before?.status !== status;
    conditions.push({
      type: problem.type,
      status,
      reason: problem.reason,
      message: problem.message,
      lastHeartbeatTime: now,
      lastTransitionTime: changed ? now : (before?.lastTransitionTime ?? now),
    });
    // A first report that the problem is absent is not news: no Event.
    if (changed && (before !== undefined || problem.present)) changes.push({ type: problem.type, from: before?.status, to: status, reason: problem.reason, message: problem.message });
  }
  return { conditions, changes };
}

export function eventFor(change: ConditionChange): NodeEvent {
  return change.to === 'True'
    ? { type: 'Warning', reason: change.reason, message: `${change.type}: ${change.message}` }
    : { type: 'Normal', reason: change.reason, message: `${change.type} cleared: ${change.message}` };
}

export class NodeConditionWriter {
  private readonly core: CoreV1Api;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(config: KubeConfig, private readonly nodeName: string, private readonly now: () => Date = () => new Date()) {
    this.core = config.makeApiClient(CoreV1Api);
  }

  /** Writes the problems' conditions (and Events for changes); calls run one after another. */
  report(problems: Problem[]): Promise<ConditionChange[]> {
    const next = this.queue.then(() => this.write(problems));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async write(problems: Problem[]): Promise<ConditionChange[]> {
    let current: V1NodeCondition[] | undefined;
    try {
      // GET nodes/NAME, not nodes/NAME/status: the role grants `get` on nodes and only `patch` on nodes/status.
      current = (await this.core.readNode({ name: this.nodeName })).status?.conditions;
    } catch (err) {
      throw kubeError(`read the status of node ${this.nodeName}`, err);
    }
    const { conditions, changes } = conditionsFor(current, problems, this.now());
    const body = { status: { conditions: conditions.map((c) => ({ ...c, lastHeartbeatTime: time(c.lastHeartbeatTime), lastTransitionTime: time(c.lastTransitionTime) })) } };
    try {
      await this.core.patchNodeStatus({ name: this.nodeName, body }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
    } catch (err) {
      throw kubeError(`write the conditions of node ${this.nodeName}`, err);
    }
    for (const change of changes) await recordNodeEvent(this.core, { name: this.nodeName }, eventFor(change), 'buildfleet-agent');
    return changes;
  }
}
