import { randomBytes } from 'node:crypto';
import { link, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Lock files that processes of one host use to take turns on a shared directory (the pre-pull
 * blob cache, the toolchain cache). A lock is a file made with O_EXCL holding
 * `PID HOST NOTE`; it is stale when its process is gone (killed, crashed), or when the caller
 * says so through `stallMs` (a live holder whose progress file stopped changing). Breaking a
 * stale lock renames it aside first, so only one waiter can break it.
 */

export type LockHolder = { pid: number; host: string; note: string };

export type StaleLockOptions = {
  /** A live holder counts as stale when the file its note names has not changed for this long. Default: never. */
  stallMs?: number;
  /** Called with the note of a lock that was broken (e.g. to remove the holder's partial file). */
  onBroken?: (note: string) => Promise<void>;
};

/** A lock written this long ago but still empty belongs to a process that died between open and write. */
const UNWRITTEN_MS = 10_000;

/** Makes the lock (O_EXCL) naming this process and `note`; false when another holds it. */
export async function tryLock(lock: string, note = ''): Promise<boolean> {
  const held = await open(lock, 'wx', 0o600).catch((err: NodeJS.ErrnoException) => (err.code === 'EEXIST' ? undefined : Promise.reject(err)));
  if (!held) return false;
  try {
    await held.writeFile(`${process.pid} ${hostname()} ${note}\n`);
  } finally {
    await held.close();
  }
  return true;
}

/** Who holds the lock, or undefined when there is none (or it is still being written). */
export async function lockHolder(lock: string): Promise<LockHolder | undefined> {
  const content = await readFile(lock, 'utf8').catch(() => undefined);
  return content === undefined ? undefined : parseHolder(content);
}

function parseHolder(content: string): LockHolder | undefined {
  const line = content.replace(/\n$/, '');
  const [pid, host] = line.split(' ');
  if (!pid || !host) return undefined;
  return { pid: Number(pid), host, note: line.slice(pid.length + host.length + 2) };
}

/** True while the process named by a lock of this host exists (another host's: assumed alive). */
export function holderAlive(holder: LockHolder): boolean {
  if (holder.host !== hostname()) return true;
  return pidAlive(holder.pid);
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Breaks the lock of a holder that died (or stalled, see StaleLockOptions). The lock is moved
 * aside by rename (only one waiter can), then its content checked: a lock moved aside by mistake
 * (taken anew by a live process in between) is put back when it can be.
 */
export async function breakIfStale(lock: string, options: StaleLockOptions = {}): Promise<boolean> {
  const seen = await readFile(lock, 'utf8').catch(() => undefined);
  if (seen === undefined || !(await isStale(lock, seen, options))) return false;
  const aside = `${lock}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
  if (!(await rename(lock, aside).then(() => true, () => false))) return false;
  const moved = await readFile(aside, 'utf8').catch(() => '');
  let broken = false;
  if (moved !== seen) await link(aside, lock).catch(() => {});
  else {
    broken = true;
    await options.onBroken?.(parseHolder(moved)?.note ?? '').catch(() => {});
  }
  await rm(aside, { force: true });
  return broken;
}

async function isStale(lock: string, content: string, options: StaleLockOptions): Promise<boolean> {
  const holder = parseHolder(content);
  if (!holder) return Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? Date.now()) > UNWRITTEN_MS;
  if (holder.host !== hostname()) return false;
  if (!pidAlive(holder.pid)) return true;
  if (options.stallMs === undefined) return false;
  // Alive: stale only when its work stopped moving.
  const grown = holder.note ? (await stat(holder.note).catch(() => undefined))?.mtimeMs : undefined;
  const since = grown ?? (await stat(lock).catch(() => undefined))?.mtimeMs ?? Date.now();
  return Date.now() - since > options.stallMs;
}

/**
 * Waits for the lock and takes it; resolves to its release. Stale locks are broken on the way.
 * `signal` aborts the wait.
 */
export async function acquireLock(lock: string, options: StaleLockOptions & { note?: string; pollMs?: number; signal?: AbortSignal } = {}): Promise<() => Promise<void>> {
  for (;;) {
    options.signal?.throwIfAborted();
    if (await tryLock(lock, options.note)) return () => rm(lock, { force: true });
    if (await breakIfStale(lock, options)) continue;
    await sleep(options.pollMs ?? 50, undefined, options.signal ? { signal: options.signal } : undefined).catch((err: Error) => Promise.reject(options.signal?.reason ?? err));
  }
}
