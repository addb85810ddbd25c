import { open } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** How the nodes (and the floors) reach the bench's registry, and what it served them since the last take. */
export interface UpstreamLink {
  readonly host: string;
  takeBytes(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * With a cap, a relay that is the link (`Upstream`). Without one the nodes go to the registry
 * itself and the bytes are the registry's own count: relaying 835 MB through a Node process costs
 * about 2.4 s of CPU here (measured with four curls at once: 0.6 s straight, 2.3 s relayed), CPU a
 * node on the same 2 cores then lacks, which the stream floor (one core busy) feels far less.
 */
export async function openUpstream(registry: { port: number; host: string; logFile: string }, options: { mbps?: number } = {}): Promise<UpstreamLink> {
  return options.mbps ? Upstream.start(registry.port, { mbps: options.mbps }) : RegistryServedBytes.open(registry.host, registry.logFile);
}

/** The registry's word on what it served: the sum of `http.response.written` in its access log. */
export class RegistryServedBytes implements UpstreamLink {
  private offset = 0;
  private partialLine = '';

  private constructor(
    readonly host: string,
    private readonly logFile: string,
  ) {}

  /** Counts from now on: what the log holds already was served before. */
  static async open(host: string, logFile: string): Promise<RegistryServedBytes> {
    const counter = new RegistryServedBytes(host, logFile);
    await counter.takeBytes();
    return counter;
  }

  /**
   * Read after the run's nodes are Ready: the registry logs a response as its last byte goes out,
   * and a node is Ready seconds after its last blob came in.
   */
  async takeBytes(): Promise<number> {
    const file = await open(this.logFile, 'r');
    let text: string;
    try {
      const { size } = await file.stat();
      const buffer = Buffer.alloc(Math.max(0, size - this.offset));
      const { bytesRead } = await file.read(buffer, 0, buffer.length, this.offset);
      this.offset += bytesRead;
      text = this.partialLine + buffer.subarray(0, bytesRead).toString('utf8');
    } finally {
      await file.close();
    }
    const lines = text.split('\n');
    this.partialLine = lines.pop() ?? '';
    return lines.reduce((sum, line) => sum + servedBy(line), 0);
  }

  async stop(): Promise<void> {}
}

/** Bytes of one access-log line of distribution's: a completed response's `http.response.written`. */
export function servedBy(line: string): number {
  if (!line.includes('msg="response completed"')) return 0;
  const written = /\bhttp\.response\.written=(\d+)/.exec(line);
  return written ? Number(written[1]) : 0;
}

/**
 * The upstream registry as nodes see it in a capped benchmark: a TCP relay on loopback in front
 * of the bench's registry that shares one link of `mbps` megabits per second among all
 * connections, as a remote registry behind one uplink is (loopback would hide what fleet pulls
 * save), and counts every byte it sends to the nodes (what a run took from upstream).
 */
export class Upstream implements UpstreamLink {
  /** Bytes sent from the registry to its clients since the last reset. */
  bytesServed = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly link: SharedLink,
  ) {}

  static async start(targetPort: number, options: { mbps: number }): Promise<Upstream> {
    const link = new SharedLink((options.mbps * 1e6) / 8);
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
  async takeBytes(): Promise<number> {
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

/**
 * Reads each blob's file in the registry's storage once, so that every run starts with its image
 * in the page cache, as a registry serving a fleet keeps its hot blobs. Without it the order of
 * the variants leaked into the figures: this VM's host pages out page cache nobody touched for a
 * minute (DAMON `pageout` of regions 60 s cold, up to 128 MiB/s), so a variant whose blobs were
 * last read two variants earlier pulled from the virtual disk (measured: the 4-layer direct
 * pre-pull took 11.4 s after the runtime-pull variants, 9.0 s when run alone).
 */
export async function warmRegistryBlobs(registry: { blobFile(digest: string): string }, digests: string[]): Promise<void> {
  for (const digest of digests) {
    const path = registry.blobFile(digest);
    const file = await open(path, 'r').catch((err: Error) => Promise.reject(new Error(`blob ${digest} is not in the registry's storage (${path}): ${err.message}`)));
    try {
      const buffer = Buffer.allocUnsafe(1 << 20);
      while ((await file.read(buffer, 0, buffer.length)).bytesRead > 0);
    } finally {
      await file.close();
    }
  }
}
