import { ApiException, KubeConfig } from '@kubernetes/client-node';
import { BuildfleetError, type ErrorKind } from '../imagebuilder/errors.js';

/**
 * Where the Kubernetes client comes from and what its failures mean to a user. In a pod, the
 * service account (loadFromDefault finds it); elsewhere $KUBECONFIG or ~/.kube/config.
 */

export function defaultKubeConfig(): KubeConfig {
  const config = new KubeConfig();
  config.loadFromDefault();
  if (!config.getCurrentCluster()) throw new BuildfleetError('environment', 'no Kubernetes cluster configured: set KUBECONFIG, or run in a pod with a service account');
  return config;
}

/** The HTTP status of a failed client call (undefined when it never got an answer). */
export function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const code = (err as { code?: unknown; statusCode?: unknown } | undefined)?.code ?? (err as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

/** The Status message the server sent with a failure, when there is one. */
function serverMessage(err: unknown): string {
  const body = (err as { body?: unknown }).body;
  try {
    const parsed = typeof body === 'string' ? (JSON.parse(body) as { message?: string }) : (body as { message?: string } | undefined);
    if (parsed?.message) return parsed.message;
  } catch {
    // not JSON: fall through
  }
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}

const KINDS: [(status: number) => boolean, ErrorKind][] = [
  [(s) => s === 401 || s === 403, 'auth'],
  [(s) => s === 404, 'not-found'],
  [(s) => s === 409 || s === 429, 'conflict'],
  [(s) => s === 400 || s === 422, 'usage'],
];

/** A client failure as one line a user can act on: `what: <server's message> (HTTP 403)`. */
export function kubeError(what: string, err: unknown): BuildfleetError {
  if (err instanceof BuildfleetError) return err;
  const status = statusOf(err);
  const kind = status === undefined ? 'network' : (KINDS.find(([test]) => test(status))?.[1] ?? 'network');
  return new BuildfleetError(kind, `${what}: ${serverMessage(err)}${status === undefined ? '' : ` (HTTP ${status})`}`, { cause: err });
}
