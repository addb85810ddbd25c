import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { handle, sendError } from './router.js';
import { ApiError, ObjectStore } from './store.js';

/**
 * A Kubernetes API server for tests, on 127.0.0.1 over plain HTTP, speaking the wire protocol
 * @kubernetes/client-node uses (see README.md). Tests seed and inspect objects through `store`,
 * and may inject failures, drop open watches, or compact the history (410 Gone on old watches).
 */

/** `status` is filled in when the answer has gone out (a watch: when its headers have). */
export type RecordedRequest = { method: string; path: string; contentType?: string; status?: number };
export type InjectedFailure = { method?: string; path: RegExp; code: number; times: number };

export type FakeKubeApi = {
  url: string;
  store: ObjectStore;
  /** Every request, in order (method, path with query, content type). */
  requests: RecordedRequest[];
  /** A KubeConfig pointing at this server, without credentials. */
  kubeConfig(): KubeConfig;
  /** The next `times` requests matching answer `code` (a Status) instead. */
  injectFailure(failure: InjectedFailure): void;
  /** Ends every open watch stream, as a dropped connection does. */
  dropWatches(): void;
  close(): Promise<void>;
};

export async function startFakeKubeApi(options: { historyLimit?: number } = {}): Promise<FakeKubeApi> {
  const store = new ObjectStore(options.historyLimit);
  const requests: RecordedRequest[] = [];
  const failures: InjectedFailure[] = [];
  const openWatches = new Set<ServerResponse>();

  const server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const recorded: RecordedRequest = { method, path, ...(req.headers['content-type'] && { contentType: req.headers['content-type'] }) };
    requests.push(recorded);
    res.on('finish', () => (recorded.status = res.statusCode));
    const failure = failures.find((candidate) => candidate.times > 0 && (!candidate.method || candidate.method === method) && candidate.path.test(path));
    if (failure) {
      failure.times--;
      req.resume();
      return sendError(res, new ApiError(failure.code, 'InternalError', `injected failure ${failure.code}`));
    }
    handle(store, req, res, openWatches).catch((err: unknown) => {
      if (res.headersSent) return res.destroy();
      sendError(res, err instanceof ApiError ? err : new ApiError(500, 'InternalError', String(err)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const dropWatches = () => {
    for (const res of openWatches) res.end();
    openWatches.clear();
  };
  return {
    url,
    store,
    requests,
    kubeConfig() {
      const config = new KubeConfig();
      config.loadFromOptions({
        clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
        users: [{ name: 'fake' }],
        contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
        currentContext: 'fake',
      });
      return config;
    },
    injectFailure: (failure) => failures.push({ ...failure }),
    dropWatches,
    async close() {
      dropWatches();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
