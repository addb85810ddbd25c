import { createHash, randomBytes } from 'node:crypto';
import { readlinkSync, rmSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

/**
 * Temp files and directories this process owns: their names carry the owner (`PID-HOST-RAND`),
 * the ones still in use are removed when the process exits (a CLI that turns SIGTERM/SIGINT
 * into process.exit gets them removed on those too), and the next run sweeps what a killed
 * owner left. HOST hashes the host name and the pid namespace: a pid means nothing outside its
 * namespace, so names of another machine or container are never swept from here.
 */

const HOST_TAG = createHash('sha256').update(`${hostname()}\0${pidNamespace()}`).digest('hex').slice(0, 8);
const OWNER = /(\d+)-([0-9a-f]{8})-[0-9a-f]{8}$/;

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
}

/** `PREFIX` + owner + random part; `pid` is for tests planting another process's name. */
export function ownedTempName(prefix: string, pid = process.pid): string {
  return `${prefix}${pid}-${HOST_TAG}-${randomBytes(4).toString('hex')}`;
}

/** The prefix of an ownedTempName (undefined for other names), and whether its owner is a gone process of this host. */
export function parseTempName(name: string): { prefix: string; ownerGone: boolean } | undefined {
  const owner = OWNER.exec(name);
  if (!owner) return undefined;
  return { prefix: name.slice(0, owner.index), ownerGone: owner[2] === HOST_TAG && !pidAlive(Number(owner[1])) };
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const tracked = new Set<string>();

function removeTrackedNow(): void {
  for (const path of tracked) {
    try {
      rmSync(path, { recursive: true, force: true, maxRetries: 2 });
    } catch {
      // Exiting anyway: the next run's sweep gets what is left.
    }
  }
  tracked.clear();
}

/** Removes `path` when the process exits, unless untrackTemp() comes first. */
export function trackTemp(path: string): void {
  if (tracked.size === 0) process.once('exit', removeTrackedNow);
  tracked.add(path);
}

/** The temp is gone or renamed into place: nothing to remove at exit. */
export function untrackTemp(path: string): void {
  tracked.delete(path);
  if (tracked.size === 0) process.removeListener('exit', removeTrackedNow);
}

/** Deletes a temp file or directory now. */
export async function removeTemp(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
  untrackTemp(path);
}

/**
 * Removes the entries of `dir` named ownedTempName(PREFIX) with a PREFIX `isTempPrefix` accepts,
 * whose owner process on this host is gone. Returns their paths.
 */
export async function sweepDeadOwners(dir: string, isTempPrefix: (prefix: string) => boolean): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const parsed = parseTempName(name);
    if (!parsed?.ownerGone || !isTempPrefix(parsed.prefix)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(join(dir, name));
  }
  return removed;
}

const isScratchPrefix = (prefix: string) => /^buildfleet-[a-z]+-$/.test(prefix);

/**
 * A new private directory `BASE/buildfleet-KIND-OWNER-RAND`, removed at exit unless removeTemp()d
 * first. The dead owners' scratch directories in BASE (of any kind) are swept first.
 */
export async function makeScratchDir(base: string, kind: string): Promise<string> {
  await mkdir(base, { recursive: true });
  await sweepDeadOwners(base, isScratchPrefix);
  const dir = join(base, ownedTempName(`buildfleet-${kind}-`));
  trackTemp(dir);
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    untrackTemp(dir);
    throw err;
  }
  return dir;
}
