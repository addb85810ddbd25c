import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { BuildfleetError } from '../errors.js';
import { contextFilter } from './dockerignore.js';

/**
 * The build context as the docker CLI sends it: a tar of the context directory without what
 * `.dockerignore` excludes, owned by root (uid/gid 0, as the CLI's ChownOpts), modes and mtimes
 * kept, symlinks as symlinks. A Dockerfile outside the context (`--file ../x`) goes in under a
 * random `.dockerfile.HEX` name, as the CLI does.
 */

export type ContextEntry = { path: string; type: 'file' | 'directory' | 'symlink'; mode: number; mtime: Date; size: number; linkname?: string };

export type BuildContext = {
  dir: string;
  /** The Dockerfile's name inside the tar (what the engine's `dockerfile` parameter takes). */
  dockerfile: string;
  entries: ContextEntry[];
  /** Files' bytes together. */
  bytes: number;
  /** A Dockerfile from outside the context, added under `dockerfile`. */
  extraDockerfile?: Buffer;
};

/**
 * Checks the context directory and the Dockerfile (`usage` errors, exit 2, before any engine is
 * asked) and lists what will be sent. `file` is relative to the current directory, as `docker build -f`.
 */
export async function prepareContext(contextDir: string, file?: string): Promise<BuildContext> {
  const dir = resolve(contextDir);
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new BuildfleetError('usage', `build context ${contextDir} is not a directory`);
  const dockerfilePath = file !== undefined ? resolve(file) : join(dir, 'Dockerfile');
  const dockerfileInfo = await stat(dockerfilePath).catch(() => undefined);
  if (!dockerfileInfo?.isFile()) {
    throw new BuildfleetError('usage', `no Dockerfile at ${file ?? join(contextDir, 'Dockerfile')}${file === undefined ? ' (give one with --file)' : ''}`);
  }
  const inside = relative(dir, dockerfilePath);
  const outside = inside.startsWith('..') || isAbsolute(inside);
  const dockerfile = outside ? `.dockerfile.${randomBytes(10).toString('hex')}` : inside.split(sep).join('/');
  const ignoreText = await readFile(join(dir, '.dockerignore'), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new BuildfleetError('usage', `cannot read ${join(contextDir, '.dockerignore')}: ${err.message}`);
  });
  const entries = await listContext(dir, contextFilter(ignoreText, outside ? ['.dockerignore'] : [dockerfile, '.dockerignore']));
  const bytes = entries.reduce((sum, entry) => sum + (entry.type === 'file' ? entry.size : 0), 0);
  return { dir, dockerfile, entries, bytes, ...(outside && { extraDockerfile: await readFile(dockerfilePath) }) };
}

/** The context's entries in walk order (a directory before what it holds, names sorted). */
export async function listContext(dir: string, filter: ReturnType<typeof contextFilter>): Promise<ContextEntry[]> {
  const entries: ContextEntry[] = [];
  const walk = async (below: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(join(dir, below))).sort();
    } catch (err) {
      throw new BuildfleetError('usage', `cannot read ${join(dir, below)} of the build context: ${(err as Error).message}`);
    }
    for (const name of names) {
      const path = below === '' ? name : `${below}/${name}`;
      const excluded = filter.excludes(path);
      const info = await lstat(join(dir, path));
      if (info.isDirectory()) {
        if (!excluded) entries.push({ path, type: 'directory', mode: info.mode & 0o7777, mtime: info.mtime, size: 0 });
        // An excluded directory is walked only when a `!` line could bring back something below it.
        if (!excluded || filter.walkExcluded) await walk(path);
        continue;
      }
      if (excluded) continue;
      if (info.isFile()) entries.push({ path, type: 'file', mode: info.mode & 0o7777, mtime: info.mtime, size: info.size });
      else if (info.isSymbolicLink()) entries.push({ path, type: 'symlink', mode: info.mode & 0o7777, mtime: info.mtime, size: 0, linkname: await readlink(join(dir, path)) });
      // Sockets, fifos and devices are not sent (the docker CLI does not either).
    }
  };
  await walk('');
  return entries;
}

/** The context as a plain tar stream (the engine is told `dockerfile`; no compression: the engine is usually local). */
export function contextTar(context: BuildContext): Readable {
  const pack = tar.pack();
  void (async () => {
    const owner = { uid: 0, gid: 0, uname: '', gname: '' };
    for (const entry of context.entries) {
      const header = { name: entry.path, mode: entry.mode, mtime: entry.mtime, ...owner };
      if (entry.type === 'directory') pack.entry({ ...header, type: 'directory' });
      else if (entry.type === 'symlink') pack.entry({ ...header, type: 'symlink', linkname: entry.linkname! });
      else {
        const sink = pack.entry({ ...header, type: 'file', size: entry.size });
        await pipeline(createReadStream(join(context.dir, entry.path)), sink);
      }
    }
    if (context.extraDockerfile) pack.entry({ name: context.dockerfile, mode: 0o644, mtime: new Date(), ...owner }, context.extraDockerfile);
    pack.finalize();
  })().catch((err: Error) => pack.destroy(new BuildfleetError('usage', `cannot read the build context: ${err.message}`)));
  return pack as unknown as Readable;
}
