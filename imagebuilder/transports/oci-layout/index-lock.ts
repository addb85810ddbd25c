import { randomBytes } from 'node:crypto';
import { link, readFile, readdir, rename, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { BuildfleetError } from '../../errors.js';
import { isTempBesidePrefix, tempPathBeside } from '../files.js';
import { pidAlive, removeTemp, sweepDeadOwners } from '../temp-files.js';
import { LOCK_FILE, createExclusive, errnoCode, fsError } from './layout-files.js';

/**
 * DIR/index.json.lock, which writers hold while they change index.json, and the clean-up of
 * what crashed writers leave behind: stale locks and `.NAME.tmp-OWNER` temp files.
 */

const LockContent = z.looseObject({ pid: z.number().int(), host: z.string(), nonce: z.string(), created: z.string().optional() });

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
        await removeTemp(aside);
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
 * Removes the temp files (`.NAME.tmp-OWNER`) of writers no longer running on this host from a
 * layout (its top, blobs/ and blobs/ALG/). Returns the removed paths. Every writer does this when
 * it opens the layout; temp names from other hosts are left alone.
 */
export async function sweepDeadWritersTemps(path: string): Promise<string[]> {
  const algs = await readdir(join(path, 'blobs')).catch(() => [] as string[]);
  const dirs = [path, join(path, 'blobs'), ...algs.map((alg) => join(path, 'blobs', alg))];
  const removed: string[] = [];
  for (const dir of dirs) removed.push(...(await sweepDeadOwners(dir, isTempBesidePrefix)));
  return removed;
}

/**
 * Removes what crashed writers left in a layout: their temp files (sweepDeadWritersTemps) and an
 * index.json.lock of a process no longer running on this host. Returns the removed paths.
 * Only for layouts written from this host: a pid says nothing about other machines.
 */
export async function removeOciLayoutLeftovers(path: string): Promise<string[]> {
  const removed = await sweepDeadWritersTemps(path);
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
