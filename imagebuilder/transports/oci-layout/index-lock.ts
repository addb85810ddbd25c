import { randomBytes } from 'node:crypto';
import { link, readFile, readdir, rename, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { BuildfleetError } from '../../oci/errors.js';
import { tempPathBeside } from '../files.js';
import { LOCK_FILE, createExclusive, errnoCode, fsError } from './layout-files.js';

/**
 * DIR/index.json.lock, which writers hold while they change index.json, and the clean-up of
 * what crashed writers leave behind: stale locks and `.NAME.tmp-PID-RAND` temp files.
 */

const TEMP_NAME = /^\..+\.tmp-(\d+)-[0-9a-f]{8}$/;

const LockContent = z.looseObject({ pid: z.number().int(), host: z.string(), nonce: z.string(), created: z.string().optional() });

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

export type LockRelease = () => Promise<void>;

/**
 * Takes DIR/index.json.lock (created exclusively, holding pid, host and a nonce). Waits up to
 * `timeoutMs` for a live holder; a lock left by a dead process on this host is taken over.
 */
export async function acquireIndexLock(root: string, label: string, timeoutMs: number): Promise<LockRelease> {
  const lockPath = join(root, LOCK_FILE);
  const nonce = randomBytes(8).toString('hex');
  const content = JSON.stringify({ pid: process.pid, host: hostname(), nonce, created: new Date().toISOString() });
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    let created: boolean;
    try {
      created = await createExclusive(lockPath, content);
    } catch (err) {
      throw fsError(err, `${label}: cannot create ${lockPath}`);
    }
    if (created) {
      return async () => {
        try {
          const held = LockContent.safeParse(JSON.parse(await readFile(lockPath, 'utf8')));
          if (held.success && held.data.nonce === nonce) await rm(lockPath, { force: true });
        } catch {
          // Already gone: nothing to release.
        }
      };
    }
    let holder: z.infer<typeof LockContent> | undefined;
    let holderText = '';
    try {
      holderText = await readFile(lockPath, 'utf8');
      const parsed = LockContent.safeParse(JSON.parse(holderText));
      holder = parsed.success ? parsed.data : undefined;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue; // released between our create and read
    }
    if (holder && holder.host === hostname() && !pidAlive(holder.pid)) {
      // Stale: move it aside, and check we moved the stale one (not a lock someone just took).
      const aside = tempPathBeside(lockPath);
      try {
        await rename(lockPath, aside);
        const moved = await readFile(aside, 'utf8');
        if (moved !== holderText) await link(aside, lockPath).catch(() => undefined);
      } catch {
        // Someone else took it over first; retry.
      } finally {
        await rm(aside, { force: true });
      }
      continue;
    }
    if (Date.now() >= deadline) {
      const who = holder ? `pid ${holder.pid} on ${holder.host}${holder.created ? ` since ${holder.created}` : ''}` : 'an unknown writer';
      throw new BuildfleetError(
        'environment',
        `${label}: the layout is locked by ${who} (${lockPath}); if no writer is running, remove that file`,
      );
    }
    await sleep(Math.min(20 + attempt * 10, 200) + Math.floor(Math.random() * 20));
  }
}

/**
 * Removes what crashed writers left in a layout: temp files (`.NAME.tmp-PID-RAND`) and
 * index.json.lock of processes no longer running on this host. Returns the removed paths.
 * Only for layouts written from this host: a pid says nothing about other machines.
 */
export async function removeOciLayoutLeftovers(path: string): Promise<string[]> {
  const removed: string[] = [];
  const dirs = [path];
  const algs = await readdir(join(path, 'blobs')).catch(() => [] as string[]);
  dirs.push(join(path, 'blobs'), ...algs.map((alg) => join(path, 'blobs', alg)));
  for (const dir of dirs) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const match = TEMP_NAME.exec(name);
      if (match && !pidAlive(Number(match[1]))) {
        await rm(join(dir, name), { force: true });
        removed.push(join(dir, name));
      }
    }
  }
  const lockPath = join(path, LOCK_FILE);
  try {
    const holder = LockContent.safeParse(JSON.parse(await readFile(lockPath, 'utf8')));
    if (holder.success && holder.data.host === hostname() && !pidAlive(holder.data.pid)) {
      await rm(lockPath, { force: true });
      removed.push(lockPath);
    }
  } catch {
    // No lock, or unreadable: leave it.
  }
  return removed;
}
