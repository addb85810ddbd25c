import { writeFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join, dirname } from 'node:path';
import { execa } from 'execa';
import { packageRoot } from '../../imagebuilder/package-root.js';
import { DockerEngine, RegistryServer, importBusyboxBase, type DockerEngineOptions, type RegistryServerOptions } from '../../nodepool/daemons/index.js';
import { tempDir } from '../../bench/harness.js';
import { procState } from '../../nodepool/local/processes.js';

/**
 * Fixtures for tests that need the real components. Each returns a handle and registers nothing
 * global: callers stop it in `after`, which node:test runs also when a test fails.
 */
export const repoRoot = packageRoot;

export { tempDir } from '../../bench/harness.js';

export const BASE_IMAGE = 'buildfleet/busybox:latest';

let setupDone: Promise<void> | undefined;

/**
 * Installs the Debian packages the real components need when one is missing (a fresh machine
 * running a single test file). Test files run in parallel, so the set-up script runs under
 * flock: one installs, the others wait and then find everything present. .ci/run installs
 * them up front, so in CI this only checks.
 */
export function ensureMachineSetup(): Promise<void> {
  setupDone ??= (async () => {
    const needed = ['dockerd', 'containerd', 'docker-registry', 'busybox', 'skopeo', 'zstd', 'getfattr', 'setcap', 'mkfs.xfs'];
    const missing = await execa('sh', ['-c', needed.map((c) => `command -v ${c} >/dev/null`).join(' && ')], { reject: false });
    if (missing.exitCode === 0) return;
    await execa('flock', ['/tmp/buildfleet-setup.lock', 'bash', join(repoRoot, 'ci', 'setup-machine.sh')], { stdio: 'inherit' });
  })();
  return setupDone;
}

export async function startEngine(options: DockerEngineOptions = {}): Promise<DockerEngine> {
  await ensureMachineSetup();
  const engine = await DockerEngine.start(options);
  try {
    await importBusyboxBase(engine.docker, BASE_IMAGE);
  } catch (err) {
    await engine.stop();
    throw err;
  }
  return engine;
}

export async function startRegistry(options: RegistryServerOptions = {}): Promise<RegistryServer> {
  await ensureMachineSetup();
  return RegistryServer.start(options);
}

/** Builds an image with real `docker build` from a Dockerfile and extra context files. */
export async function dockerBuild(engine: DockerEngine, tag: string, dockerfile: string, files: Record<string, string | Buffer> = {}, contextDir?: string): Promise<void> {
  const context = contextDir ? { path: contextDir, remove: async () => {} } : await tempDir('buildfleet-context-');
  try {
    await writeFile(join(context.path, 'Dockerfile'), dockerfile);
    for (const [name, content] of Object.entries(files)) {
      await mkdir(dirname(join(context.path, name)), { recursive: true });
      await writeFile(join(context.path, name), content);
    }
    await engine.cli(['build', '--network', 'none', '-q', '-t', tag, context.path]);
  } finally {
    await context.remove();
  }
}

export type CliResult = { exitCode: number; stdout: string; stderr: string };

/**
 * How tests start the CLI: through tsx from the sources, or with BUILDFLEET_TEST_CLI=dist the
 * built CLI that users run (`.ci/run` builds first and sets it: a start-up costs a third of tsx's,
 * and some tests start the CLI dozens of times).
 */
export function testCliCommand(): string[] {
  return process.env.BUILDFLEET_TEST_CLI === 'dist' ? [join(repoRoot, 'dist', 'cli', 'main.cjs')] : ['--import', 'tsx', join(repoRoot, 'cli', 'main.cts')];
}

/** Runs the real CLI in its own process, as a user would. */
export async function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const result = await execa(process.execPath, [...testCliCommand(), ...args], {
    cwd: repoRoot,
    env: { ...env, CI: 'true' },
    reject: false,
    timeout: 300_000,
  });
  return { exitCode: result.exitCode ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/**
 * SIGSTOPs a daemon and returns once every one of its threads has stopped: kill(2) only queues
 * the signal, and a multi-threaded daemon may still answer a request in that window.
 */
export async function stopProcess(pid: number, timeoutMs = 5000): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const tasks = await readdir(`/proc/${pid}/task`);
    const states = await Promise.all(tasks.map((task) => readFile(`/proc/${pid}/task/${task}/stat`, 'utf8').then(procState, () => 'T')));
    if (states.every((state) => state === 'T' || state === 't')) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} did not stop within ${timeoutMs} ms (thread states ${states.join('')})`);
    await sleep(5);
  }
}
