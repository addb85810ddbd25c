import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Blobs shared by the nodes of one host, so that N nodes started together fetch each blob from
 * the upstream registry once (fleet pulls). One process fetches a blob (it holds `HEX.lock`,
 * made with O_EXCL) and writes it beside its own use to `HEX.partial`; once the bytes match the
 * digest it renames the file to `HEX`, and everyone else reads that. A process that waits for
 * a blob takes over when the fetcher died (its pid is gone) or gave up (no lock, no blob).
 * Nothing half-written or unverified is ever under a blob's own name.
 */

export type CachedBlob = { stream: Readable; from: 'upstream' | 'cache' };

const POLL_MS = 50;

export class SharedBlobCache {
  private readonly blobs: string;

  constructor(readonly dir: string) {
    this.blobs = join(dir, 'sha256');
  }

  /**
   * The blob's bytes: from the cache when it is whole there, else from `fetch()` (for this
   * process only if no other is fetching it; otherwise after that one has finished).
   */
  async open(digest: string, fetch: () => Readable, signal?: AbortSignal): Promise<CachedBlob> {
    const hex = digest.slice(digest.indexOf(':') + 1);
    if (!/^[a-f0-9]{64}$/.test(hex) || !digest.startsWith('sha256:')) return { stream: fetch(), from: 'upstream' };
    await mkdir(this.blobs, { recursive: true });
    const final = join(this.blobs, hex);
    const lock = `${final}.lock`;
    for (;;) {
      signal?.throwIfAborted();
      if (await exists(final)) return { stream: createReadStream(final, { highWaterMark: 1 << 20 }), from: 'cache' };
      const held = await open(lock, 'wx').catch((err: NodeJS.ErrnoException) => (err.code === 'EEXIST' ? undefined : Promise.reject(err)));
      if (held) {
        await held.writeFile(`${process.pid} ${hostname()}\n`);
        await held.close();
        // Looked again under the lock: a fetcher may have renamed the blob between the two looks.
        if (await exists(final)) {
          await rm(lock, { force: true });
          continue;
        }
        return { stream: await this.fetchInto(fetch(), hex, final, lock), from: 'upstream' };
      }
      if (await fetcherGone(lock)) {
        await rm(`${final}.partial`, { force: true });
        await rm(lock, { force: true });
        continue;
      }
      await sleep(POLL_MS, undefined, signal ? { signal } : undefined);
    }
  }

  /** Removes the whole cache (the last pool of the host is gone). */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  /** The stream passes the fetched bytes on and writes them to the partial file; the blob is named when the digest holds. */
  private async fetchInto(source: Readable, hex: string, final: string, lock: string): Promise<Readable> {
    const partial = `${final}.partial`;
    let file: FileHandle | undefined;
    try {
      file = await open(partial, 'w');
    } catch (err) {
      await rm(lock, { force: true });
      throw err;
    }
    const hash = createHash('sha256');
    const handle = file;
    const release = async (keep: boolean) => {
      await handle.close().catch(() => {});
      if (keep && hash.digest('hex') === hex) await rename(partial, final).catch(() => rm(partial, { force: true }));
      else await rm(partial, { force: true });
      await rm(lock, { force: true });
    };
    const tee = new Transform({
      transform(chunk: Buffer, _encoding, done: TransformCallback) {
        hash.update(chunk);
        handle.write(chunk).then(() => done(null, chunk), done);
      },
      flush(done: TransformCallback) {
        release(true).then(() => done(), done);
      },
    });
    let released = false;
    tee.once('close', () => {
      // Ended early (an error, an abort, a consumer gone): nobody may take these bytes as the blob.
      if (!tee.writableFinished && !released) void release(false);
    });
    tee.once('finish', () => (released = true));
    source.once('error', (err) => tee.destroy(err));
    tee.once('close', () => source.destroy());
    source.pipe(tee);
    return tee;
  }
}

/** The fetcher named in the lock is no longer running on this host (or the lock is unreadable and old). */
async function fetcherGone(lock: string): Promise<boolean> {
  const text = await readFile(lock, 'utf8').catch(() => undefined);
  if (text === undefined) return false; // gone already: the next look finds the blob or takes the lock
  const [pid, host] = text.trim().split(' ');
  if (!pid) {
    // Made but not yet written: only stale if it stays that way.
    const age = Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? Date.now());
    return age > 10_000;
  }
  if (host && host !== hostname()) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
