import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../imagebuilder/errors.js';

/**
 * A long-running child process (dockerd, containerd, registry) with its output in a log file.
 * Every daemon is tracked so that a crashing test process still kills what it started.
 */
export class Daemon {
  readonly child: ChildProcess;
  private exited = false;
  private readonly exitPromise: Promise<number | null>;

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    readonly logFile: string,
    env: NodeJS.ProcessEnv = process.env,
    options: { ownSession?: boolean } = {},
  ) {
    const log = openSync(logFile, 'a');
    try {
      this.child = spawn(command, args, { stdio: ['ignore', log, log], env, detached: options.ownSession ?? false });
    } finally {
      closeSync(log);
    }
    this.exitPromise = new Promise((resolve) => {
      this.child.once('exit', (code) => {
        this.exited = true;
        live.delete(this);
        resolve(code);
      });
      this.child.once('error', () => {
        this.exited = true;
        live.delete(this);
        resolve(null);
      });
    });
    live.add(this);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return !this.exited;
  }

  /** The last lines of the daemon's log, for error messages. */
  logTail(lines = 5): string {
    try {
      return readFileSync(this.logFile, 'utf8').trim().split('\n').slice(-lines).join(' | ');
    } catch {
      return '';
    }
  }

  /** Polls `ready` until it holds; fails early with the log's tail if the daemon exits. */
  async waitUntil(ready: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.exited) {
        throw new BuildfleetError('environment', `${this.name} exited during start-up: ${this.logTail()}`);
      }
      if (await ready().catch(() => false)) return;
      if (Date.now() > deadline) {
        throw new BuildfleetError('environment', `${this.name} not ready after ${timeoutMs} ms: ${this.logTail()}`);
      }
      await sleep(50);
    }
  }

  /** SIGCONT first (a SIGSTOPped daemon ignores SIGTERM), then SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGCONT');
    this.child.kill('SIGTERM');
    const grace = new AbortController();
    const killed = await Promise.race([
      this.exitPromise.then(() => true),
      sleep(graceMs, false, { signal: grace.signal }).catch(() => false),
    ]);
    grace.abort(); // a pending grace timer would keep the process alive
    if (!killed) {
      this.child.kill('SIGKILL');
      await this.exitPromise;
    }
  }
}

const live = new Set<Daemon>();
process.once('exit', () => {
  for (const daemon of live) {
    try {
      daemon.child.kill('SIGCONT');
      daemon.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
