import { isLoopbackHost } from '../oci/reference.js';

/** Settings of a registry client. Everything is optional; the defaults suit a CI job. */
export type RegistryOptions = {
  /** Hosts (host[:port]) allowed over plain http. Loopback hosts always are. */
  insecure?: string[];
  /** A PEM file with an extra CA for TLS (added to Node's built-in roots). */
  caFile?: string;
  /** Explicit credentials; they win over the docker config file. */
  credentials?: { username: string; password: string } | { identityToken: string };
  /** Docker config.json; default $DOCKER_CONFIG/config.json, else ~/.docker/config.json. */
  authFile?: string;
  /** Retries after the first attempt for 5xx, 429 and connection errors. Default 4. */
  retries?: number;
  /** First backoff delay; doubles on each retry. Default 200 ms. */
  retryBaseDelayMs?: number;
  /** Operations one client runs at once (uploads, downloads, HEADs). Default 6. */
  concurrency?: number;
  /** When set, blobs are uploaded in PATCHes of this many bytes instead of one streaming PATCH. */
  chunkSize?: number;
  /** Called after every HTTP exchange (status 0 when no answer came): for logs and tests. */
  onRequest?: (info: { method: string; url: string; status: number }) => void;
};

export const defaultRetries = 4;
export const defaultRetryBaseDelayMs = 200;
export const defaultConcurrency = 6;

/** Where the registry API of a host lives, and the name its credentials are stored under. */
export type Endpoint = {
  /** host[:port] as written in references (docker.io for Docker Hub). */
  host: string;
  /** scheme://host[:port] the API is reached at. */
  origin: string;
  /** Keys to look up in a docker config.json, best first. */
  credentialKeys: string[];
  /** What a credential helper is asked for. */
  helperServerUrl: string;
};

const dockerHubKeys = ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io'];

export function endpointFor(host: string, options: RegistryOptions): Endpoint {
  if (host === 'docker.io' || host === 'index.docker.io' || host === 'registry-1.docker.io') {
    return {
      host: 'docker.io',
      origin: 'https://registry-1.docker.io',
      credentialKeys: dockerHubKeys,
      helperServerUrl: 'https://index.docker.io/v1/',
    };
  }
  const plain = isLoopbackHost(host) || (options.insecure ?? []).includes(host);
  return { host, origin: `${plain ? 'http' : 'https'}://${host}`, credentialKeys: [host], helperServerUrl: host };
}
