import { OAuth2Client } from 'google-auth-library';
import { clusterManagerTransport, type GkeTransport } from '../../../nodepool/gke/client.js';
import { GkeOperations, type GkeOperationsOptions } from '../../../nodepool/gke/operations.js';
import { parsePoolSpec, type PoolSpec, type PoolSpecInput } from '../../../nodepool/pool-spec/pool-spec.js';
import { FakeGke } from './server.js';

/**
 * A fake GKE and the real client pointed at it: REST fallback over plain HTTP on loopback, an
 * OAuth2Client with a fixed token (so no Application Default Credentials are looked up and the
 * metadata server is never probed), and fast polls.
 */

export const FAKE_TOKEN = 'fake-token-for-tests';
export const FAST_POLLS: GkeOperationsOptions = { pollInitialMs: 5, pollMaxMs: 20, retryInitialMs: 5, retryMaxMs: 40, callTimeoutMs: 5_000, operationTimeoutMs: 15_000 };

export function gkeSpec(extra: Omit<Partial<PoolSpecInput>, 'gke'> & { gke?: Record<string, unknown> } = {}): PoolSpec {
  const { gke, ...rest } = extra;
  return parsePoolSpec({ name: 'ci', provider: 'gke', nodes: 2, images: ['us-docker.pkg.dev/p/ci/build:1'], ...rest, gke: { project: 'build-proj', location: 'us-central1', cluster: 'builds', ...gke } });
}

export function tokenClient(token = FAKE_TOKEN): OAuth2Client {
  const client = new OAuth2Client();
  client.setCredentials({ access_token: token, expiry_date: Date.now() + 3_600_000 });
  return client;
}

export type FakeGkeSetup = { fake: FakeGke; transport: GkeTransport; operations: GkeOperations; stop(): Promise<void> };

export async function startFakeGke(spec: PoolSpec, options: { pollsToDone?: number; token?: string } = {}): Promise<FakeGkeSetup> {
  process.env.METADATA_SERVER_DETECTION = 'none';
  const gke = spec.gke!;
  const fake = await FakeGke.start({ project: gke.project, location: gke.location, cluster: gke.cluster, token: FAKE_TOKEN, pollsToDone: options.pollsToDone ?? 2 });
  const transport = await clusterManagerTransport({ apiEndpoint: '127.0.0.1', port: fake.port, protocol: 'http', authClient: tokenClient(options.token) });
  const operations = new GkeOperations(transport, gke, FAST_POLLS);
  return {
    fake,
    transport,
    operations,
    async stop() {
      await transport.close();
      await fake.close();
    },
  };
}
