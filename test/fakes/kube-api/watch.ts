import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Matcher } from './selectors.js';
import type { KubeObject, ObjectStore, ResourceType, StoredEvent } from './store.js';

/**
 * A watch as the API server streams it: a 200 response of newline-delimited JSON events
 * (`{"type":"ADDED|MODIFIED|DELETED|ERROR","object":...}`). Without a resourceVersion (or "0")
 * it starts with an ADDED event per existing object; with one it replays the changes after it.
 * A version older than the server's history gets one ERROR event holding a 410 Expired Status
 * and the end of the stream, which is how a real server tells a client to relist.
 */

export type WatchRequest = { type: ResourceType; namespace: string | undefined; resourceVersion: string | null; timeoutSeconds: number | undefined; matches: Matcher };

export function serveWatch(store: ObjectStore, request: WatchRequest, req: IncomingMessage, res: ServerResponse, open: Set<ServerResponse>): void {
  res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
  res.flushHeaders(); // the client waits for the headers before it reads events, and there may be none for a while
  const send = (type: string, object: unknown) => res.write(JSON.stringify({ type, object }) + '\n');
  const wanted = (object: KubeObject) => (request.namespace === undefined || object.metadata.namespace === request.namespace) && request.matches(object);

  const from = request.resourceVersion ?? '';
  let backlog: StoredEvent[];
  if (from === '' || from === '0') {
    backlog = store.list(request.type, request.namespace).map((object) => ({ type: 'ADDED', resource: request.type.plural, object, resourceVersion: Number(object.metadata.resourceVersion) }));
  } else {
    const since = store.eventsSince(request.type.plural, Number(from));
    if (!since) {
      send('ERROR', { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${store.resourceVersion})`, reason: 'Expired', code: 410 });
      res.end();
      return;
    }
    backlog = since;
  }
  for (const event of backlog) if (wanted(event.object)) send(event.type, event.object);

  const unsubscribe = store.subscribe((event) => {
    if (event.resource === request.type.plural && wanted(event.object)) send(event.type, event.object);
  });
  open.add(res);
  const timer = request.timeoutSeconds ? setTimeout(() => res.end(), request.timeoutSeconds * 1000) : undefined;
  const finish = () => {
    unsubscribe();
    open.delete(res);
    if (timer) clearTimeout(timer);
  };
  res.on('close', finish);
  req.on('close', finish);
}
