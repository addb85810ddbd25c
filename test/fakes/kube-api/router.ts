import type { IncomingMessage, ServerResponse } from 'node:http';
import { evictPod } from './eviction.js';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch } from './patch.js';
import { fieldSelector, labelSelector } from './selectors.js';
import { ApiError, apiVersionOf, RESOURCES, type KubeObject, type ObjectStore, type ResourceType } from './store.js';
import { serveWatch } from './watch.js';

/**
 * URL -> resource, verb -> store call, errors -> Status objects. The paths are the real ones:
 * `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` for the core group and
 * `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]` for the others.
 */

export type Route = { type: ResourceType; namespace: string | undefined; name: string | undefined; subresource: string | undefined };

export function parsePath(pathname: string): Route | undefined {
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === 'api') [group, version, rest] = ['', parts[1] ?? '', parts.slice(2)];
  else if (parts[0] === 'apis') [group, version, rest] = [parts[1] ?? '', parts[2] ?? '', parts.slice(3)];
  else return undefined;
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) [namespace, rest] = [rest[1], rest.slice(2)];
  const type = RESOURCES.find((candidate) => candidate.group === group && candidate.version === version && candidate.plural === rest[0]);
  if (!type || rest.length > 3 || (namespace !== undefined && !type.namespaced)) return undefined;
  return { type, namespace, name: rest[1], subresource: rest[2] };
}

const PATCHES: Record<string, (target: KubeObject, patch: unknown) => KubeObject> = {
  'application/json-patch+json': applyJsonPatch,
  'application/merge-patch+json': applyMergePatch,
  'application/strategic-merge-patch+json': applyStrategicMergePatch,
};

function send(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

export function sendError(res: ServerResponse, error: ApiError): void {
  send(res, error.code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: error.message, reason: error.reason, code: error.code, ...(error.details && { details: error.details }) });
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'BadRequest', 'the request body is not JSON');
  }
}

/**
 * Writes to a resource keep its status, writes to /status keep all but its status: the split
 * that makes a node's conditions writable only through nodes/status, as RBAC expects.
 */
function splitStatus(current: KubeObject, next: KubeObject, subresource: string | undefined): KubeObject {
  if (subresource === 'status') return { ...current, status: next.status, metadata: { ...current.metadata, resourceVersion: next.metadata?.resourceVersion } };
  if (current.kind === 'Event') return next;
  return { ...next, status: current.status };
}

export async function handle(store: ObjectStore, req: IncomingMessage, res: ServerResponse, openWatches: Set<ServerResponse>): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://fake');
  const route = parsePath(url.pathname);
  if (!route) throw new ApiError(404, 'NotFound', `the server could not find the requested resource (${req.method} ${url.pathname})`);
  const { type, namespace, name, subresource } = route;
  const query = url.searchParams;
  const method = req.method ?? 'GET';

  if (name === undefined) {
    if (method === 'GET') {
      const matchLabels = labelSelector(query.get('labelSelector'));
      const matchFields = fieldSelector(query.get('fieldSelector'));
      const matches = (object: KubeObject) => matchLabels(object) && matchFields(object);
      if (query.get('watch') === 'true' || query.get('watch') === '1') {
        const timeout = query.get('timeoutSeconds');
        return serveWatch(store, { type, namespace, resourceVersion: query.get('resourceVersion'), timeoutSeconds: timeout ? Number(timeout) : undefined, matches }, req, res, openWatches);
      }
      const resourceVersion = store.resourceVersion;
      const items = store.list(type, namespace).filter(matches);
      return send(res, 200, { kind: `${type.kind}List`, apiVersion: apiVersionOf(type), metadata: { resourceVersion }, items });
    }
    if (method === 'POST') return send(res, 201, store.create(type, namespace, (await readBody(req)) as KubeObject));
    throw new ApiError(405, 'MethodNotAllowed', `${method} is not supported on ${type.plural}`);
  }

  if (subresource === 'eviction') {
    if (type.plural !== 'pods' || method !== 'POST') throw new ApiError(405, 'MethodNotAllowed', 'eviction takes POST on pods');
    await readBody(req);
    evictPod(store, namespace ?? 'default', name);
    return send(res, 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
  }
  if (subresource !== undefined && (subresource !== 'status' || type.kind === 'Event')) {
    throw new ApiError(404, 'NotFound', `${type.plural} has no subresource ${subresource}`);
  }

  switch (method) {
    case 'GET':
      return send(res, 200, store.get(type, namespace, name));
    case 'DELETE':
      await readBody(req);
      return send(res, 200, store.delete(type, namespace, name));
    case 'PUT': {
      const current = store.get(type, namespace, name);
      return send(res, 200, store.replace(type, namespace, name, splitStatus(current, (await readBody(req)) as KubeObject, subresource)));
    }
    case 'PATCH': {
      const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
      const apply = PATCHES[contentType];
      if (!apply) throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${Object.keys(PATCHES).join(', ')}`);
      const current = store.get(type, namespace, name);
      const patched = apply(current, await readBody(req));
      // A patch that names no resourceVersion must not trip the optimistic-concurrency check.
      if (patched.metadata?.resourceVersion === current.metadata.resourceVersion) delete patched.metadata.resourceVersion;
      return send(res, 200, store.replace(type, namespace, name, splitStatus(current, patched, subresource)));
    }
    default:
      throw new ApiError(405, 'MethodNotAllowed', `${method} is not supported on ${type.plural}/${name}`);
  }
}
