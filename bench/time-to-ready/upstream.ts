import { createServer, connect, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The upstream registry as nodes see it in the benchmark: a TCP proxy on loopback in front of the
 * bench's registry that counts every byte it sends to the nodes (what a run took from upstream)
 * and, with a cap, shares one link of `mbps` megabits per second among all connections, as a
 * remote registry behind one uplink is. Without a cap loopback would hide what fleet pulls save.
 */
export class Upstream {
  /** Bytes sent from the registry to its clients since the last reset. */
  bytesServed = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly link: SharedLink | undefined,
  ) {}

  static async start(targetPort: number, options: { mbps?: number } = {}): Promise<Upstream> {
    const link = options.mbps ? new SharedLink((options.mbps * 1e6) / 8) : undefined;
    let upstream: Upstream | undefined;
    const server = createServer((client) => upstream!.relay(client, targetPort));
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
    const address = server.address();
    upstream = new Upstream(server, typeof address === 'object' && address ? address.port : 0, link);
    return upstream;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Reads the count and starts a new one. */
  takeBytes(): number {
    const bytes = this.bytesServed;
    this.bytesServed = 0;
    return bytes;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: Socket, targetPort: number): void {
    const registry = connect(targetPort, '127.0.0.1');
    for (const socket of [client, registry]) {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        registry.destroy();
      });
    }
    client.pipe(registry);
    registry.on('data', (chunk: Buffer) => {
      this.bytesServed += chunk.length;
      if (!this.link) {
        if (!client.write(chunk)) {
          registry.pause();
          client.once('drain', () => registry.resume());
        }
        return;
      }
      // Through the shared link: the registry waits while this chunk is on the wire.
      registry.pause();
      this.link.pass(chunk.length).then(() => {
        if (client.write(chunk)) registry.resume();
        else client.once('drain', () => registry.resume());
      });
    });
    registry.once('end', () => client.end());
    client.once('end', () => registry.end());
  }
}

/** One link of a fixed rate, first come first served: each chunk leaves when the ones before it have. */
class SharedLink {
  private freeAt = 0;

  constructor(private readonly bytesPerSecond: number) {}

  async pass(bytes: number): Promise<void> {
    const now = performance.now();
    this.freeAt = Math.max(now, this.freeAt) + (bytes / this.bytesPerSecond) * 1000;
    const wait = this.freeAt - now;
    if (wait >= 1) await sleep(wait);
  }
}
