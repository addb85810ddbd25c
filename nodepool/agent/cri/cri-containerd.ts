import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon } from '../../daemons/process.js';
import { requireCommands } from '../../daemons/engine-config.js';
import { unmountBelow } from '../../daemons/docker-engine.js';
import { CriClient } from './client.js';

/**
 * A containerd of our own with its CRI plugin enabled, as a GKE node runs it: own root, state
 * and socket under one directory, no CNI (the CRI plugin then reports NetworkReady false, which
 * the agent does not need: it lists containers and images, and runs no pods). For tests and
 * benchmarks of the CRI probe and pinning. Registries in `plainHttp` are reached over HTTP
 * (a mirror entry per host, containerd 1.6's CRI registry config).
 */
export class CriContainerd {
  readonly socketPath: string;

  private constructor(
    readonly root: string,
    private readonly daemon: Daemon,
    private readonly ownsRoot: boolean,
  ) {
    this.socketPath = join(root, 'containerd.sock');
  }

  static async start(options: { root?: string; plainHttp?: string[]; startTimeoutMs?: number } = {}): Promise<CriContainerd> {
    await requireCommands(['containerd'], 'containerd');
    const ownsRoot = options.root === undefined;
    const root = options.root ?? (await mkdtemp(join(tmpdir(), 'buildfleet-cri-')));
    await mkdir(join(root, 'cni', 'conf'), { recursive: true });
    const config = join(root, 'containerd.toml');
    await writeFile(config, criContainerdConfig(root, options.plainHttp ?? []));
    const daemon = new Daemon('containerd (CRI)', 'containerd', ['--config', config], join(root, 'containerd.log'));
    const server = new CriContainerd(root, daemon, ownsRoot);
    try {
      const client = new CriClient(server.socketPath);
      try {
        await daemon.waitUntil(async () => existsSync(server.socketPath) && !!(await client.version({ timeoutMs: 1000 })), options.startTimeoutMs ?? 30_000);
      } finally {
        client.close();
      }
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  get pid(): number | undefined {
    return this.daemon.pid;
  }

  async stop(): Promise<void> {
    await this.daemon.stop(10_000);
    await unmountBelow(this.root);
    if (this.ownsRoot) await rm(this.root, { recursive: true, force: true });
  }
}

/** containerd 1.6's config (version 2) with the CRI plugin on: the Debian package's default config disables it. */
export function criContainerdConfig(root: string, plainHttp: string[]): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return [
    'version = 2',
    `root = "${join(root, 'root')}"`,
    `state = "${join(root, 'state')}"`,
    'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
    '[grpc]',
    `  address = "${join(root, 'containerd.sock')}"`,
    '[ttrpc]',
    `  address = "${join(root, 'containerd.sock.ttrpc')}"`,
    '[debug]',
    '  address = ""',
    '[metrics]',
    '  address = ""',
    `[${cri}]`,
    '  disable_tcp_service = true',
    `[${cri}.cni]`,
    `  bin_dir = "${join(root, 'cni', 'bin')}"`,
    `  conf_dir = "${join(root, 'cni', 'conf')}"`,
    ...plainHttp.flatMap((host) => [`[${cri}.registry.mirrors."${host}"]`, `  endpoint = ["http://${host}"]`]),
    '',
  ].join('\n');
}
