import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A fake GKE ClusterManager on 127.0.0.1 that speaks the REST wire protocol
 * `v1.ClusterManagerClient({ fallback: true })` really sends: `/v1/projects/P/locations/L/
 * clusters/C/nodePools...?$alt=json;enum-encoding=int`, Bearer auth, JSON bodies with enums as
 * numbers, answers with numbers too (as GKE does when asked for int enums), errors as Google's
 * `{"error":{"code":HTTP,"status":NAME,"message":...}}`.
 *
 * It keeps the node pools of one cluster; mutating calls return an Operation that is RUNNING
 * until it has been polled `pollsToDone` times, then DONE (and only then takes effect); while
 * one runs, another mutating call gets FAILED_PRECONDITION, as GKE answers. Scripts: refuse the
 * next calls with any status, end the next operation with an error, hold the cluster busy
 * with someone else's operation. Every request is recorded for exact checks.
 */

export type RecordedRequest = { httpMethod: string; path: string; query: string; body: unknown; authorization?: string };
/** What updateNodePool may carry here (the settings buildfleet changes in place), as on the wire. */
export type NodePoolUpdate = { labels?: { labels?: Record<string, string> }; taints?: { taints?: unknown[] }; kubeletConfig?: unknown; gcfsConfig?: unknown };
export type OperationEffect =
  | { type: 'CREATE_NODE_POOL' | 'SET_NODE_POOL_SIZE' | 'DELETE_NODE_POOL'; nodePool: string; nodeCount?: number }
  /** `previous`: the pool's config before the update (what a node's labels and taints came from). */
  | { type: 'UPDATE_NODE_POOL'; nodePool: string; update: NodePoolUpdate; previous?: Record<string, unknown> }
  | { type: 'SET_NODE_POOL_AUTOSCALING'; nodePool: string; autoscaling: unknown };
type StoredPool = { name: string; config: Record<string, unknown>; initialNodeCount: number; autoscaling?: unknown; nodeCount: number; status: number };
type StoredOperation = { name: string; type: number; target: string; polls: number; done: boolean; effect: OperationEffect; error?: { code: number; message: string } };

// GKE reports a node pool update as UPGRADE_NODES and an autoscaling change as UPDATE_CLUSTER.
const OPERATION_TYPE = { UPGRADE_NODES: 4, UPDATE_CLUSTER: 6, CREATE_NODE_POOL: 7, DELETE_NODE_POOL: 8, SET_NODE_POOL_SIZE: 14 } as const;
/** The fields of an UpdateNodePoolRequest body the fake applies; any other is refused, so a stray field shows up in tests. */
const UPDATABLE = new Set(['labels', 'taints', 'kubeletConfig', 'gcfsConfig']);
const OPERATION_STATUS = { RUNNING: 2, DONE: 3 } as const;
const POOL_STATUS = { PROVISIONING: 1, RUNNING: 2, STOPPING: 5 } as const;
const GRPC_CODE: Record<string, number> = { INVALID_ARGUMENT: 3, NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, UNAUTHENTICATED: 16, UNAVAILABLE: 14 };
const HTTP_CODE: Record<string, number> = { INVALID_ARGUMENT: 400, FAILED_PRECONDITION: 400, UNAUTHENTICATED: 401, PERMISSION_DENIED: 403, NOT_FOUND: 404, ALREADY_EXISTS: 409, RESOURCE_EXHAUSTED: 429, UNAVAILABLE: 503 };

/** token null: an emulator, which refuses any request that carries credentials. */
export type FakeGkeOptions = { project: string; location: string; cluster: string; token: string | null; pollsToDone?: number };
export type Refusal = { method?: 'createNodePool' | 'setNodePoolSize' | 'deleteNodePool' | 'updateNodePool' | 'setNodePoolAutoscaling' | 'getOperation' | 'getNodePool'; status: string; message: string; times?: number };

export class FakeGke {
  readonly requests: RecordedRequest[] = [];
  readonly pools = new Map<string, StoredPool>();
  /** Called when an operation turns DONE without error, after its effect (tests register nodes here). */
  onDone: (effect: OperationEffect) => void | Promise<void> = () => {};
  private readonly operations = new Map<string, StoredOperation>();
  private readonly refusals: Refusal[] = [];
  private nextOperationError?: { code: number; message: string };
  private busyRefusals = 0;
  private counter = 0;
  private server!: Server;
  port = 0;

  constructor(readonly options: FakeGkeOptions) {}

  static async start(options: FakeGkeOptions): Promise<FakeGke> {
    const fake = new FakeGke(options);
    fake.server = createServer((req, res) => void fake.handle(req, res));
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
    fake.port = (fake.server.address() as AddressInfo).port;
    return fake;
  }

  get clusterPath(): string {
    return `projects/${this.options.project}/locations/${this.options.location}/clusters/${this.options.cluster}`;
  }

  /** The next matching calls are refused with this status. */
  refuse(refusal: Refusal): void {
    this.refusals.push({ times: 1, ...refusal });
  }

  /** The next operation ends DONE with this error (and no effect). */
  failNextOperation(status: string, message: string): void {
    this.nextOperationError = { code: GRPC_CODE[status] ?? 2, message };
  }

  /** Someone else's operation holds the cluster for the next `refusals` mutating calls. */
  holdBusy(refusals: number): void {
    this.busyRefusals = refusals;
  }

  /** Mutating requests only (create, setSize, update, setAutoscaling, delete), in order. */
  mutations(): RecordedRequest[] {
    return this.requests.filter((r) => r.httpMethod !== 'GET');
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://fake');
    const recorded: RecordedRequest = { httpMethod: req.method ?? '', path: decodeURIComponent(url.pathname), query: decodeURIComponent(url.search), body: text ? JSON.parse(text) : undefined, authorization: req.headers.authorization };
    this.requests.push(recorded);
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify(body));
    };
    const refuse = (status: string, message: string) => send(HTTP_CODE[status] ?? 500, { error: { code: HTTP_CODE[status] ?? 500, status, message } });
    try {
      if (this.options.token === null && req.headers.authorization !== undefined) return refuse('INVALID_ARGUMENT', 'fake emulator: credentials were sent to a stand-in');
      if (this.options.token !== null && req.headers.authorization !== `Bearer ${this.options.token}`) return refuse('UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token.');
      if (url.searchParams.get('$alt') !== 'json;enum-encoding=int') return refuse('INVALID_ARGUMENT', `unexpected query ${url.search}`);
      const route = this.route(recorded.httpMethod, recorded.path);
      if (!route) return refuse('NOT_FOUND', `Not found: ${recorded.path}.`);
      const scripted = this.refusals.find((r) => !r.method || r.method === route.method);
      if (scripted) {
        scripted.times = (scripted.times ?? 1) - 1;
        if (scripted.times <= 0) this.refusals.splice(this.refusals.indexOf(scripted), 1);
        return refuse(scripted.status, scripted.message);
      }
      const answer = await this.answer(route, recorded.body as Record<string, unknown> | undefined);
      if ('error' in answer) return refuse(answer.error, answer.message);
      send(200, answer.body);
    } catch (err) {
      refuse('INTERNAL', `fake: ${(err as Error).message}`);
    }
  }

  private route(httpMethod: string, path: string): { method: NonNullable<Refusal['method']> | 'listNodePools'; pool?: string; operation?: string; project: string; cluster?: string } | undefined {
    const op = /^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/operations\/([^/]+)$/.exec(path);
    if (op && httpMethod === 'GET') return { method: 'getOperation', project: op[1]!, operation: op[3]! };
    const m = /^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/clusters\/([^/]+)\/nodePools(?:\/([^/:]+))?(:setSize|:setAutoscaling)?$/.exec(path);
    if (!m) return undefined;
    const [, project, , cluster, pool, verb] = m;
    const at = { project: project!, cluster };
    if (!pool && httpMethod === 'POST') return { method: 'createNodePool', ...at };
    if (!pool && httpMethod === 'GET') return { method: 'listNodePools', ...at };
    if (pool && verb === ':setSize' && httpMethod === 'POST') return { method: 'setNodePoolSize', pool, ...at };
    if (pool && verb === ':setAutoscaling' && httpMethod === 'POST') return { method: 'setNodePoolAutoscaling', pool, ...at };
    if (pool && !verb && httpMethod === 'GET') return { method: 'getNodePool', pool, ...at };
    if (pool && !verb && httpMethod === 'PUT') return { method: 'updateNodePool', pool, ...at };
    if (pool && !verb && httpMethod === 'DELETE') return { method: 'deleteNodePool', pool, ...at };
    return undefined;
  }

  private async answer(route: NonNullable<ReturnType<FakeGke['route']>>, body: Record<string, unknown> | undefined): Promise<{ body: unknown } | { error: string; message: string }> {
    if (route.project !== this.options.project) return { error: 'PERMISSION_DENIED', message: `Permission denied on resource project ${route.project}.` };
    if (route.cluster !== undefined && route.cluster !== this.options.cluster) return { error: 'NOT_FOUND', message: `Not found: projects/${route.project}/locations/${this.options.location}/clusters/${route.cluster}.` };
    const poolPath = (name: string) => `${this.clusterPath}/nodePools/${name}`;
    switch (route.method) {
      case 'getOperation': {
        const operation = this.operations.get(route.operation!);
        if (!operation) return { error: 'NOT_FOUND', message: `Not found: operation ${route.operation}.` };
        operation.polls++;
        if (!operation.done && operation.polls >= (this.options.pollsToDone ?? 2)) await this.finish(operation);
        return { body: this.operationJson(operation) };
      }
      case 'listNodePools':
        return { body: { nodePools: [...this.pools.values()].map((pool) => this.poolJson(pool)) } };
      case 'getNodePool': {
        const pool = this.pools.get(route.pool!);
        return pool ? { body: this.poolJson(pool) } : { error: 'NOT_FOUND', message: `Not found: ${poolPath(route.pool!)}.` };
      }
      default:
        break;
    }
    // Mutating calls: one operation at a time on the cluster.
    const running = [...this.operations.values()].find((operation) => !operation.done);
    if (this.busyRefusals > 0 || running) {
      if (this.busyRefusals > 0) this.busyRefusals--;
      return { error: 'FAILED_PRECONDITION', message: `Cluster is running incompatible operation ${running?.name ?? 'operation-upgrade-1'}.` };
    }
    if (route.method === 'createNodePool') {
      const nodePool = (body?.nodePool ?? {}) as { name?: string; config?: Record<string, unknown>; initialNodeCount?: number; autoscaling?: unknown };
      if (!nodePool.name) return { error: 'INVALID_ARGUMENT', message: 'Node pool name must be set.' };
      if (this.pools.has(nodePool.name)) return { error: 'ALREADY_EXISTS', message: `Already exists: ${poolPath(nodePool.name)}.` };
      const count = nodePool.initialNodeCount ?? 0;
      this.pools.set(nodePool.name, { name: nodePool.name, config: nodePool.config ?? {}, initialNodeCount: count, autoscaling: nodePool.autoscaling, nodeCount: 0, status: POOL_STATUS.PROVISIONING });
      return { body: this.operationJson(this.begin(OPERATION_TYPE.CREATE_NODE_POOL, { type: 'CREATE_NODE_POOL', nodePool: nodePool.name, nodeCount: count })) };
    }
    const pool = this.pools.get(route.pool!);
    if (!pool) return { error: 'NOT_FOUND', message: `Not found: ${poolPath(route.pool!)}.` };
    if (route.method === 'setNodePoolSize') {
      const nodeCount = Number((body as { nodeCount?: number } | undefined)?.nodeCount ?? 0);
      return { body: this.operationJson(this.begin(OPERATION_TYPE.SET_NODE_POOL_SIZE, { type: 'SET_NODE_POOL_SIZE', nodePool: pool.name, nodeCount })) };
    }
    if (route.method === 'updateNodePool') {
      const fields = Object.keys(body ?? {}).filter((field) => field !== 'name');
      const stray = fields.filter((field) => !UPDATABLE.has(field));
      if (fields.length === 0 || stray.length > 0) return { error: 'INVALID_ARGUMENT', message: `fake: updateNodePool with ${fields.length === 0 ? 'nothing to update' : `fields it does not apply: ${stray.join(', ')}`}.` };
      return { body: this.operationJson(this.begin(OPERATION_TYPE.UPGRADE_NODES, { type: 'UPDATE_NODE_POOL', nodePool: pool.name, update: body as NodePoolUpdate })) };
    }
    if (route.method === 'setNodePoolAutoscaling') {
      const autoscaling = (body as { autoscaling?: { enabled?: boolean; minNodeCount?: number; maxNodeCount?: number } } | undefined)?.autoscaling;
      if (!autoscaling) return { error: 'INVALID_ARGUMENT', message: 'Autoscaling must be set.' };
      if (autoscaling.enabled && (autoscaling.minNodeCount ?? 0) > (autoscaling.maxNodeCount ?? 0)) return { error: 'INVALID_ARGUMENT', message: 'Autoscaling min_node_count must not exceed max_node_count.' };
      return { body: this.operationJson(this.begin(OPERATION_TYPE.UPDATE_CLUSTER, { type: 'SET_NODE_POOL_AUTOSCALING', nodePool: pool.name, autoscaling })) };
    }
    pool.status = POOL_STATUS.STOPPING;
    return { body: this.operationJson(this.begin(OPERATION_TYPE.DELETE_NODE_POOL, { type: 'DELETE_NODE_POOL', nodePool: pool.name })) };
  }

  private begin(type: number, effect: OperationEffect): StoredOperation {
    const operation: StoredOperation = { name: `operation-${++this.counter}`, type, target: effect.nodePool, polls: 0, done: false, effect, error: this.nextOperationError };
    this.nextOperationError = undefined;
    this.operations.set(operation.name, operation);
    return operation;
  }

  private async finish(operation: StoredOperation): Promise<void> {
    const { effect } = operation;
    operation.done = true;
    const pool = this.pools.get(effect.nodePool);
    if (operation.error) {
      // A create that fails leaves the pool in ERROR, as GKE does: the caller must delete it.
      if (pool && effect.type === 'CREATE_NODE_POOL') pool.status = 6;
      return;
    }
    if (effect.type === 'DELETE_NODE_POOL') this.pools.delete(effect.nodePool);
    else if (pool && effect.type === 'UPDATE_NODE_POOL') {
      // Labels and taints arrive wrapped (NodeLabels, NodeTaints); the pool's config holds them bare, as a create gives them.
      const { labels, taints, ...rest } = effect.update;
      effect.previous = pool.config;
      pool.config = { ...pool.config, ...rest, ...(labels && { labels: labels.labels ?? {} }), ...(taints && { taints: taints.taints ?? [] }) };
    } else if (pool && effect.type === 'SET_NODE_POOL_AUTOSCALING') {
      pool.autoscaling = effect.autoscaling;
    } else if (pool) {
      pool.nodeCount = ('nodeCount' in effect ? effect.nodeCount : undefined) ?? pool.nodeCount;
      pool.status = POOL_STATUS.RUNNING;
    }
    await this.onDone(effect);
  }

  private operationJson(operation: StoredOperation): unknown {
    const done = operation.done;
    const { project, location } = this.options;
    return {
      name: operation.name,
      zone: location,
      operationType: operation.type,
      status: done ? OPERATION_STATUS.DONE : OPERATION_STATUS.RUNNING,
      selfLink: `https://container.googleapis.com/v1/projects/${project}/locations/${location}/operations/${operation.name}`,
      targetLink: `https://container.googleapis.com/v1/${this.clusterPath}/nodePools/${operation.target}`,
      location,
      ...(done && operation.error ? { error: operation.error, statusMessage: operation.error.message } : {}),
    };
  }

  private poolJson(pool: StoredPool): unknown {
    return { name: pool.name, config: pool.config, initialNodeCount: pool.initialNodeCount, ...(pool.autoscaling ? { autoscaling: pool.autoscaling } : {}), status: pool.status, selfLink: `https://container.googleapis.com/v1/${this.clusterPath}/nodePools/${pool.name}` };
  }
}
