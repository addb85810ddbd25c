import { BuildfleetError, type ErrorKind } from '../../imagebuilder/errors.js';

/**
 * What the container API said, whichever way it reached us: the REST fallback throws a
 * GaxiosError (HTTP status, the JSON error body as its message), gRPC a GoogleError (numeric
 * code), a dead endpoint a Node system error. Pure, so each shape has a unit test.
 */

const GRPC_STATUS = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED',
] as const;
export type ApiStatus = (typeof GRPC_STATUS)[number];

const HTTP_STATUS: Record<number, ApiStatus> = {
  400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND', 409: 'ALREADY_EXISTS',
  429: 'RESOURCE_EXHAUSTED', 499: 'CANCELLED', 500: 'INTERNAL', 501: 'UNIMPLEMENTED', 503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED',
};

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'UND_ERR_SOCKET']);

export type ApiFailure = { status: ApiStatus; message: string };

export function statusName(code: number | string | null | undefined): ApiStatus {
  if (typeof code === 'string' && (GRPC_STATUS as readonly string[]).includes(code)) return code as ApiStatus;
  return typeof code === 'number' && GRPC_STATUS[code] ? GRPC_STATUS[code] : 'UNKNOWN';
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** The API's status and message, or undefined for an error that is not the API's (a bug). */
export function apiFailureOf(err: unknown): ApiFailure | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as Error & { code?: unknown; status?: unknown; details?: unknown };
  // REST: the message is the response body, {"error":{"code":403,"status":"PERMISSION_DENIED","message":...}}.
  try {
    const body = JSON.parse(e.message) as { error?: { status?: string; message?: string; code?: number } };
    if (body.error) {
      const status = body.error.status ? statusName(body.error.status) : HTTP_STATUS[body.error.code ?? 0] ?? 'UNKNOWN';
      return { status, message: oneLine(body.error.message ?? e.message) };
    }
  } catch {
    // not a JSON body
  }
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return { status: 'UNAVAILABLE', message: oneLine(`${e.code}: ${e.message}`) };
  if (e.name === 'AbortError' || /timeout|timed out/i.test(e.message)) return { status: 'DEADLINE_EXCEEDED', message: oneLine(e.message) };
  const http = typeof e.status === 'number' ? e.status : typeof e.code === 'number' && e.code >= 100 ? e.code : undefined;
  if (http !== undefined) return { status: HTTP_STATUS[http] ?? (http >= 500 ? 'UNAVAILABLE' : 'UNKNOWN'), message: oneLine(e.message) };
  if (typeof e.code === 'number') return { status: statusName(e.code), message: oneLine(typeof e.details === 'string' && e.details ? e.details : e.message) };
  const cause = (e as { cause?: unknown }).cause;
  return cause ? apiFailureOf(cause) : undefined;
}

/** Another operation runs on the cluster: wait and send again. */
export function isOperationConflict(failure: ApiFailure): boolean {
  return failure.status === 'FAILED_PRECONDITION' || (failure.status === 'ABORTED' && /operation/i.test(failure.message));
}

/** Worth sending again after a pause (the server or the network hiccuped). */
export function isTransient(failure: ApiFailure): boolean {
  return failure.status === 'UNAVAILABLE' || failure.status === 'DEADLINE_EXCEEDED' || failure.status === 'INTERNAL';
}

const KIND: Partial<Record<ApiStatus, ErrorKind>> = {
  INVALID_ARGUMENT: 'usage', OUT_OF_RANGE: 'usage', NOT_FOUND: 'not-found', ALREADY_EXISTS: 'conflict', ABORTED: 'conflict', FAILED_PRECONDITION: 'conflict',
  PERMISSION_DENIED: 'auth', UNAUTHENTICATED: 'auth', RESOURCE_EXHAUSTED: 'environment', UNAVAILABLE: 'network', DEADLINE_EXCEEDED: 'network', UNIMPLEMENTED: 'unsupported',
};

/**
 * The one line a user reads. `what` names the call and its target ("createNodePool ci-3fa2c1 in
 * projects/p/locations/l/clusters/c"), `project` says where quota or permission is missing.
 */
export function gkeError(failure: ApiFailure, what: string, project: string): BuildfleetError {
  const kind = KIND[failure.status] ?? 'environment';
  switch (failure.status) {
    case 'RESOURCE_EXHAUSTED':
      return new BuildfleetError(kind, `GKE quota exceeded for ${what}: ${failure.message} (raise the quota of project ${project}, or ask for fewer or smaller nodes)`);
    case 'PERMISSION_DENIED':
      return new BuildfleetError(kind, `GKE permission denied for ${what}: ${failure.message} (the credentials need container.nodePools.* and container.operations.get on project ${project}, e.g. roles/container.admin)`);
    case 'UNAUTHENTICATED':
      return new BuildfleetError(kind, `GKE refused the credentials for ${what}: ${failure.message} (Application Default Credentials: run "gcloud auth application-default login" or set GOOGLE_APPLICATION_CREDENTIALS)`);
    case 'NOT_FOUND':
      return new BuildfleetError(kind, `GKE: not found for ${what}: ${failure.message} (check gke.project, gke.location and gke.cluster)`);
    default:
      return new BuildfleetError(kind, `GKE ${failure.status} for ${what}: ${failure.message}`);
  }
}
