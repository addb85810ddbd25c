import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Node } from '@kubernetes/client-node';

/**
 * Nodes as a watch keeps them: list once, then watch from the list's resourceVersion. The
 * client's ListWatch relists by itself when the server answers 410 Gone (its history no longer
 * reaches the version asked) and rewatches when a stream ends; on any other error it stops and
 * only reports it, so this restarts it, with backoff (doubling up to maxMs, reset by the next
 * event that arrives).
 */

export type NodeInformerOptions = {
  /** e.g. `buildfleet.io/pool=ci` for a pool's nodes. */
  labelSelector?: string;
  /** e.g. `metadata.name=NODE` for the agent's own node. */
  fieldSelector?: string;
  backoff?: { initialMs: number; maxMs: number };
  /** A node was added or changed (after a relist too). */
  onNode?: (node: V1Node) => void;
  onDelete?: (node: V1Node) => void;
  /** An error the informer restarts after (logged, not thrown). */
  onError?: (err: unknown, retryInMs: number) => void;
};

export class NodeInformer {
  private readonly listWatch: ListWatch<V1Node>;
  private readonly backoff: { initialMs: number; maxMs: number };
  private delay: number;
  private restart: NodeJS.Timeout | undefined;
  private stopped = false;
  /** How many times the informer was restarted after an error. */
  restarts = 0;

  constructor(config: KubeConfig, private readonly options: NodeInformerOptions = {}) {
    const core = config.makeApiClient(CoreV1Api);
    const list = () => core.listNode({ ...(options.labelSelector && { labelSelector: options.labelSelector }), ...(options.fieldSelector && { fieldSelector: options.fieldSelector }) });
    this.listWatch = new ListWatch<V1Node>('/api/v1/nodes', new Watch(config), list, false, options.labelSelector, options.fieldSelector);
    this.backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    this.delay = this.backoff.initialMs;
    const seen = (handler?: (node: V1Node) => void) => (node: V1Node) => {
      this.delay = this.backoff.initialMs;
      handler?.(node);
    };
    this.listWatch.on('add', seen(options.onNode));
    this.listWatch.on('update', seen(options.onNode));
    this.listWatch.on('delete', seen(options.onDelete));
    this.listWatch.on('error', (err: unknown) => this.scheduleRestart(err));
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.listWatch.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restart);
    await this.listWatch.stop();
  }

  get(name: string): V1Node | undefined {
    return this.listWatch.get(name);
  }

  list(): readonly V1Node[] {
    return this.listWatch.list();
  }

  private scheduleRestart(err: unknown): void {
    if (this.stopped) return;
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, this.backoff.maxMs);
    this.options.onError?.(err, wait);
    clearTimeout(this.restart);
    this.restart = setTimeout(() => {
      this.restarts++;
      if (!this.stopped) this.listWatch.start().catch((startErr: unknown) => this.scheduleRestart(startErr));
    }, wait);
  }
}
