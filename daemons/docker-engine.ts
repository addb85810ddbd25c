import { mkdtemp, mkdir, writeFile, rm, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { execa } from 'execa';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { Daemon } from './process.js';
import { containerdConfig, dockerdArgs, requireCommands } from './engine-config.js';

export type DockerEngineOptions = {
  /** Directory that holds everything of this engine; a fresh temp dir when absent. */
  root?: string;
  /** Where image and container data live (a node's runtime disk); `<root>/data` by default. */
  dataRoot?: string;
  /** `dockerd --experimental`, needed for `docker build --squash`. */
  experimental?: boolean;
  /** Keep containers running while dockerd restarts, so a runtime restart spares running builds (nodepool/README.md). */
  liveRestore?: boolean;
  /** Registries dockerd may reach over plain HTTP besides loopback. */
  insecureRegistries?: string[];
  startTimeoutMs?: number;
};

/**
 * A real Docker Engine of our own: containerd and dockerd with their own roots, sockets and
 * pidfile under one directory, no bridge and no iptables. containerd runs as our child, not
 * dockerd's, so that a killed dockerd can be started again (PID 1 here reaps no orphans).
 */
export class DockerEngine {
  readonly socketPath: string;
  readonly docker: Docker;
  private containerd: Daemon | undefined;
  private dockerd: Daemon | undefined;
  private readonly ownsRoot: boolean;

  private constructor(
    readonly root: string,
    readonly dataRoot: string,
    private readonly options: DockerEngineOptions,
    ownsRoot: boolean,
  ) {
    this.socketPath = join(root, 'docker.sock');
    this.docker = new Docker({ socketPath: this.socketPath });
    this.ownsRoot = ownsRoot;
  }

  static async start(options: DockerEngineOptions = {}): Promise<DockerEngine> {
    await requireCommands(['dockerd', 'containerd'], 'docker.io');
    const ownsRoot = options.root === undefined;
    const root = options.root ?? (await mkdtemp(join(tmpdir(), 'buildfleet-docker-')));
    const engine = new DockerEngine(root, options.dataRoot ?? join(root, 'data'), options, ownsRoot);
    try {
      await engine.startContainerd();
      await engine.startDockerd();
    } catch (err) {
      await engine.stop();
      throw err;
    }
    return engine;
  }

  /** DOCKER_HOST for the docker CLI. */
  get host(): string {
    return `unix://${this.socketPath}`;
  }

  get dockerdPid(): number | undefined {
    return this.dockerd?.pid;
  }

  get containerdPid(): number | undefined {
    return this.containerd?.pid;
  }

  get containerdSocket(): string {
    return join(this.root, 'containerd.sock');
  }

  private async startContainerd(): Promise<void> {
    const config = join(this.root, 'containerd.toml');
    await mkdir(join(this.root, 'containerd'), { recursive: true });
    await writeFile(config, containerdConfig({ root: join(this.root, 'containerd', 'root'), state: join(this.root, 'containerd', 'state'), socket: this.containerdSocket }));
    this.containerd = new Daemon('containerd', 'containerd', ['--config', config], join(this.root, 'containerd.log'));
    await this.containerd.waitUntil(async () => existsSync(this.containerdSocket), this.options.startTimeoutMs ?? 30_000);
  }

  /** Starts dockerd (again, after a crash or a kill: containers survive with liveRestore). */
  async startDockerd(): Promise<void> {
    const args = dockerdArgs({
      containerdSocket: this.containerdSocket,
      dataRoot: this.dataRoot,
      execRoot: join(this.root, 'exec'),
      socket: this.socketPath,
      pidfile: join(this.root, 'docker.pid'),
      ...this.options,
    });
    // Docker 20.10 decompresses layers with unpigz when it is on PATH; keep PATH as it is.
    this.dockerd = new Daemon('dockerd', 'dockerd', args, join(this.root, 'dockerd.log'));
    await this.dockerd.waitUntil(async () => {
      await this.docker.ping();
      return true;
    }, this.options.startTimeoutMs ?? 60_000);
  }

  /** SIGKILLs dockerd as a health monitor would; containerd and (with liveRestore) containers live on. */
  async killDockerd(): Promise<void> {
    this.dockerd?.child.kill('SIGCONT');
    this.dockerd?.child.kill('SIGKILL');
    await this.dockerd?.stop(1000);
  }

  /** Runs the docker CLI against this engine. */
  async cli(args: string[], options: { input?: string } = {}): Promise<{ stdout: string; stderr: string }> {
    const result = await execa('docker', args, { env: { DOCKER_HOST: this.host }, ...(options.input !== undefined && { input: options.input }), reject: false });
    if (result.exitCode !== 0) {
      throw new BuildfleetError('environment', `docker ${args.join(' ')} failed: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    }
    return { stdout: result.stdout, stderr: result.stderr };
  }

  async stop(): Promise<void> {
    await this.dockerd?.stop(15_000);
    // dockerd stopped its containers; a shim can outlive them only if dockerd was killed.
    await this.killShims();
    await this.containerd?.stop(10_000);
    await unmountBelow(this.root);
    if (this.ownsRoot) await rm(this.root, { recursive: true, force: true });
  }

  private async killShims(): Promise<void> {
    const result = await execa('pgrep', ['-f', `containerd-shim.*${this.containerdSocket}`], { reject: false });
    for (const pid of result.stdout.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
}

/** Unmounts every mount point below dir, deepest first (overlay and netns mounts of a killed dockerd). */
export async function unmountBelow(dir: string): Promise<number> {
  const mounts = await mountsBelow(dir);
  for (const mountPoint of mounts) {
    await execa('umount', ['-l', mountPoint], { reject: false });
  }
  return mounts.length;
}

/** Mount points at or below dir, deepest first (the order they can be unmounted in). */
export async function mountsBelow(dir: string): Promise<string[]> {
  return (await readFile('/proc/mounts', 'utf8'))
    .split('\n')
    .map((line) => line.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((mountPoint): mountPoint is string => !!mountPoint && (mountPoint === dir || mountPoint.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
}
