import type { AuthClient } from 'google-auth-library';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { GkeRequest, NodePool, Operation } from './requests.js';

/**
 * The one place that touches `@google-cloud/container`: a `GkeTransport` sends a request built
 * by `requests.ts` through `v1.ClusterManagerClient` over its REST fallback (JSON over HTTPS,
 * the protocol the fake in `test/fakes/gke/` speaks, so what the tests check is what runs).
 * The library is imported on first use: it takes seconds to load and most commands never need it.
 */

/** Where the API is and who calls it; all empty in real use (container.googleapis.com, Application Default Credentials). */
export type GkeConnection = {
  apiEndpoint?: string;
  port?: number;
  protocol?: 'http' | 'https';
  /** Tests pass an OAuth2Client with a fixed token; unset, the library finds Application Default Credentials. */
  authClient?: AuthClient;
  /** An emulator on loopback: send no credentials at all (none are looked up). */
  noCredentials?: boolean;
};

export const ENDPOINT_VARIABLE = 'BUILDFLEET_GKE_ENDPOINT';
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/**
 * Where the CLI sends container.v1 calls: `BUILDFLEET_GKE_ENDPOINT=https://HOST[:PORT]` (another
 * endpoint, with Application Default Credentials as usual), or `http://127.0.0.1:PORT` (an
 * emulator on this machine: plain HTTP and no credentials, so a token never travels unencrypted
 * or to a stand-in). Plain HTTP anywhere but loopback is refused. Unset: container.googleapis.com.
 */
export function connectionFromEnv(env: NodeJS.ProcessEnv = process.env): GkeConnection {
  const value = env[ENDPOINT_VARIABLE];
  if (!value) return {};
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new BuildfleetError('usage', `${ENDPOINT_VARIABLE}: "${value}" is not a URL; give https://HOST[:PORT], or http://127.0.0.1:PORT for an emulator`);
  }
  const port = url.port ? Number(url.port) : undefined;
  if (url.protocol === 'https:') return { apiEndpoint: url.hostname, ...(port && { port }), protocol: 'https' };
  if (url.protocol === 'http:' && LOOPBACK.has(url.hostname)) return { apiEndpoint: url.hostname.replace(/^\[|\]$/g, ''), ...(port && { port }), protocol: 'http', noCredentials: true };
  throw new BuildfleetError('usage', `${ENDPOINT_VARIABLE}: plain http only to an emulator on loopback (127.0.0.1, ::1, localhost), got "${value}"; use https://`);
}

export type GkeResponse = Operation | NodePool | { nodePools?: NodePool[] | null };

export interface GkeTransport {
  /** Sends once (no retry of its own: operations.ts decides), failing after timeoutMs. */
  send(request: GkeRequest, timeoutMs: number): Promise<GkeResponse>;
  close(): Promise<void>;
}

type Client = InstanceType<(typeof import('@google-cloud/container'))['v1']['ClusterManagerClient']>;

export async function clusterManagerClient(connection: GkeConnection): Promise<Client> {
  const { v1 } = await import('@google-cloud/container');
  const { noCredentials, ...options } = connection;
  if (noCredentials) options.authClient = new (await import('google-auth-library')).PassThroughClient();
  // fallback: REST. Its HTTP errors never match the library's gRPC retry codes, so it sends each
  // call once: a retry after FAILED_PRECONDITION must wait for the other operation (operations.ts).
  return new v1.ClusterManagerClient({ fallback: true, ...options } as ConstructorParameters<typeof v1.ClusterManagerClient>[0]);
}

export function transportOver(client: Client): GkeTransport {
  return {
    async send(request, timeoutMs) {
      const options = { timeout: timeoutMs };
      switch (request.method) {
        case 'createNodePool':
          return (await client.createNodePool(request.request, options))[0];
        case 'setNodePoolSize':
          return (await client.setNodePoolSize(request.request, options))[0];
        case 'deleteNodePool':
          return (await client.deleteNodePool(request.request, options))[0];
        case 'updateNodePool':
          return (await client.updateNodePool(request.request, options))[0];
        case 'setNodePoolAutoscaling':
          return (await client.setNodePoolAutoscaling(request.request, options))[0];
        case 'getOperation':
          return (await client.getOperation(request.request, options))[0];
        case 'getNodePool':
          return (await client.getNodePool(request.request, options))[0];
        case 'listNodePools':
          return (await client.listNodePools(request.request, options))[0];
      }
    },
    close: () => client.close(),
  };
}

export async function clusterManagerTransport(connection: GkeConnection = {}): Promise<GkeTransport> {
  return transportOver(await clusterManagerClient(connection));
}
