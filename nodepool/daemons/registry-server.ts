import { mkdtemp, writeFile, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { Daemon, freePort } from './process.js';
import { requireCommands } from './engine-config.js';

/**
 * distribution's `auth:` section as it stands in its config.yml, e.g. `{ htpasswd: { realm, path } }`;
 * passed through as it is (the tests set up htpasswd and token auth, see test/helpers/registry-fakes.ts).
 */
export type RegistryAuthConfig = Record<string, unknown>;

export type RegistryServerOptions = {
  root?: string;
  /** Anonymous access when absent. */
  auth?: RegistryAuthConfig;
  startTimeoutMs?: number;
};

/**
 * A real OCI registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1 with its
 * storage under a temp dir. Loopback, so clients speak plain HTTP to it.
 */
export class RegistryServer {
  private constructor(
    readonly root: string,
    readonly port: number,
    private readonly daemon: Daemon,
    private readonly ownsRoot: boolean,
  ) {}

  static async start(options: RegistryServerOptions = {}): Promise<RegistryServer> {
    await requireCommands(['docker-registry'], 'docker-registry');
    const ownsRoot = options.root === undefined;
    const root = options.root ?? (await mkdtemp(join(tmpdir(), 'buildfleet-registry-')));
    await mkdir(join(root, 'storage'), { recursive: true });
    // The port can be taken between freePort() and the bind; try a few.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const config = join(root, 'config.yml');
      await writeFile(config, registryConfig(join(root, 'storage'), port, options.auth));
      const daemon = new Daemon('docker-registry', 'docker-registry', ['serve', config], join(root, 'registry.log'));
      const server = new RegistryServer(root, port, daemon, ownsRoot);
      try {
        await daemon.waitUntil(async () => {
          const res = await request(`${server.url}/v2/`);
          await res.body.dump();
          return res.statusCode === 200 || res.statusCode === 401;
        }, options.startTimeoutMs ?? 20_000);
        return server;
      } catch (err) {
        await daemon.stop(2000);
        if (attempt >= 3 || !/address already in use/.test(daemon.logTail(20))) {
          if (ownsRoot) await rm(root, { recursive: true, force: true });
          throw err;
        }
      }
    }
  }

  /** host:port, as written in image references. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://${this.host}`;
  }

  get storageDir(): string {
    return join(this.root, 'storage');
  }

  /** Where distribution's filesystem driver keeps a blob's bytes (sha256:HEX -> .../blobs/sha256/HE/HEX/data). */
  blobFile(digest: string): string {
    const hex = digest.replace(/^sha256:/, '');
    return join(this.storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  }

  get logFile(): string {
    return join(this.root, 'registry.log');
  }

  async stop(): Promise<void> {
    await this.daemon.stop(5000);
    if (this.ownsRoot) await rm(this.root, { recursive: true, force: true });
  }
}

function registryConfig(storage: string, port: number, auth: RegistryAuthConfig | undefined): string {
  return stringify({
    version: 0.1,
    log: { level: 'info', accesslog: { disabled: false } },
    storage: { filesystem: { rootdirectory: storage }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: `127.0.0.1:${port}`, headers: { 'X-Content-Type-Options': ['nosniff'] } },
    ...(auth && { auth }),
  });
}
