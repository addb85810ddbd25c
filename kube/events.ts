import { hostname } from 'node:os';
import type { CoreV1Api, CoreV1Event } from '@kubernetes/client-node';

/**
 * Kubernetes Events about a node, as kubectl describe node shows them. Events are a record for
 * people, not state: failing to write one must not fail the action it describes, so callers
 * get the error back instead of a throw.
 */

export type NodeEvent = { reason: string; message: string; type?: 'Normal' | 'Warning' };

/** The Event object, pure (the namespace is `default`, where node events live). */
export function nodeEventObject(node: { name: string; uid?: string }, event: NodeEvent, component: string, now = new Date()): CoreV1Event {
  return {
    metadata: { generateName: `${node.name}.`, namespace: 'default' },
    involvedObject: { apiVersion: 'v1', kind: 'Node', name: node.name, ...(node.uid && { uid: node.uid }) },
    reason: event.reason,
    message: event.message,
    type: event.type ?? 'Normal',
    source: { component, host: hostname() },
    firstTimestamp: now,
    lastTimestamp: now,
    count: 1,
  };
}

export async function recordNodeEvent(core: CoreV1Api, node: { name: string; uid?: string }, event: NodeEvent, component = 'buildfleet'): Promise<Error | undefined> {
  try {
    await core.createNamespacedEvent({ namespace: 'default', body: nodeEventObject(node, event, component) });
    return undefined;
  } catch (err) {
    return err as Error;
  }
}
