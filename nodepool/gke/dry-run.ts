import type { AuthClient } from 'google-auth-library';
import { clusterManagerClient, transportOver } from './client.js';
import type { PoolSpec } from '../pool-spec/pool-spec.js';
import { createNodePoolRequest, deleteNodePoolRequest, gkePoolName, requireGke, setNodePoolSizeRequest, type MutatingRequest } from './requests.js';
import { planRotation, rotationRequests } from './rotation.js';

/**
 * `--dry-run`: the exact HTTP requests the real client would send, made by the real client.
 * The request goes through `v1.ClusterManagerClient`'s own encoder (path template, numeric
 * enums, int64 as strings, its default fields) into an auth client that records it instead of
 * sending it and answers "DONE". No credentials are looked up and nothing leaves the process.
 */

export type WireRequest = { httpMethod: string; path: string; body?: unknown };

const DONE = JSON.stringify({ name: 'dry-run', status: 3 });

/** Implements the two calls the REST fallback makes of its auth client. */
function recordingAuthClient(sent: WireRequest[]): AuthClient {
  const recorder = {
    universeDomain: 'googleapis.com',
    async getRequestHeaders() {
      return new Headers();
    },
    async fetch(url: string | URL, init: { method?: string; body?: string | Buffer } = {}) {
      const parsed = new URL(String(url));
      const body = init.body === undefined ? undefined : JSON.parse(init.body.toString());
      sent.push({ httpMethod: init.method ?? 'GET', path: decodeURIComponent(parsed.pathname), ...(body === undefined ? {} : { body }) });
      return new Response(DONE, { status: 200, headers: { 'content-type': 'application/json' } });
    },
  };
  return recorder as unknown as AuthClient;
}

export async function wireRequests(requests: MutatingRequest[]): Promise<WireRequest[]> {
  const sent: WireRequest[] = [];
  const transport = transportOver(await clusterManagerClient({ authClient: recordingAuthClient(sent) }));
  try {
    for (const request of requests) await transport.send(request, 10_000);
  } finally {
    await transport.close();
  }
  return sent;
}

/** One request a block: `POST /v1/...` then its JSON body, indented. */
export function formatWireRequests(requests: WireRequest[]): string {
  return requests.map((r) => `${r.httpMethod} ${r.path}${r.body === undefined ? '' : `\n${JSON.stringify(r.body, null, 2)}`}`).join('\n\n');
}

/** What a pool command would ask GKE for, from the specs alone (no API read). */
export type GkeAction =
  | { kind: 'create'; spec: PoolSpec }
  | { kind: 'resize'; spec: PoolSpec; nodes: number }
  | { kind: 'delete'; spec: PoolSpec }
  | { kind: 'rotate'; current: PoolSpec; wanted: PoolSpec };

export function actionRequests(action: GkeAction): MutatingRequest[] {
  switch (action.kind) {
    case 'create':
      return [createNodePoolRequest(action.spec)];
    case 'resize':
      return [setNodePoolSizeRequest(requireGke(action.spec), gkePoolName(action.spec), action.nodes)];
    case 'delete':
      return [deleteNodePoolRequest(requireGke(action.spec), gkePoolName(action.spec))];
    case 'rotate': {
      const plan = planRotation(action.current, action.wanted);
      return plan ? rotationRequests(plan) : [];
    }
  }
}

/** `--dry-run` for a GKE pool: the requests, as text (or the list, for --json). */
export async function gkeDryRun(action: GkeAction): Promise<{ requests: WireRequest[]; text: string }> {
  const requests = await wireRequests(actionRequests(action));
  return { requests, text: requests.length > 0 ? formatWireRequests(requests) : 'nothing to send: the node pool already has these fixed settings' };
}
