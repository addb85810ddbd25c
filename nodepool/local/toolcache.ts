import { mkdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { BuildfleetError, isBuildfleetError } from '../../imagebuilder/errors.js';
import type { CacheSpec } from '../pool-spec/pool-spec.js';

/**
 * What a job sees of its node's toolchain cache (`cache/`, on the workload disk): the cache
 * directory read-only at the hosted runners' path, `RUNNER_TOOL_CACHE` naming it (so setup
 * scripts written for hosted runners find entries), and the spec's declared toolchains fetched
 * before the job starts (a local hit, else the registry, else the installer) with their `bin`
 * first on PATH. The fetch runs here, on the node's host, not in the job's container: a build
 * image needs neither Node.js nor buildfleet for it, and the cache stays the node's own (a job
 * cannot corrupt it, it is mounted read-only). See cache/README.md ("On a pool node").
 */

/** Where jobs see the cache: the path hosted runners' tool caches use. */
export const JOB_TOOLCACHE = '/opt/hostedtoolcache';

/** What the job container gets: bind mounts and environment. */
export type JobToolcache = { binds: string[]; env: string[] };

/** The PATH of a container whose image sets none (Docker's default). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Pure: `node@20.11.0` -> tool and version (the spec checked the form). */
export function parseToolchainRef(ref: string): { tool: string; version: string } {
  const at = ref.indexOf('@');
  return { tool: ref.slice(0, at), version: ref.slice(at + 1) };
}

/**
 * Pure: the job's environment for entries at these paths inside the cache (`node/20.11.0/x64`),
 * in the spec's order, before the image's own PATH (`imagePath`; undefined: leave PATH alone).
 */
export function toolcacheEnv(entries: string[], imagePath: string | undefined): string[] {
  const env = [`RUNNER_TOOL_CACHE=${JOB_TOOLCACHE}`, `BUILDFLEET_TOOLCACHE=${JOB_TOOLCACHE}`];
  if (entries.length > 0) env.push(`PATH=${[...entries.map((entry) => `${JOB_TOOLCACHE}/${entry}/bin`), imagePath ?? DEFAULT_PATH].join(':')}`);
  return env;
}

/** Pure: the image's PATH from its config's Env, if it sets one. */
export function imagePathOf(env: readonly string[] | null | undefined): string | undefined {
  return env?.find((entry) => entry.startsWith('PATH='))?.slice('PATH='.length);
}

export type ToolcacheTarget = {
  node: string;
  workloadMount: string;
  insecureRegistries: string[];
  /** The job image's PATH, asked only when the spec declares toolchains. */
  imagePath: () => Promise<string | undefined>;
  log: (line: string) => void;
};

/**
 * Gets the declared toolchains into the node's cache (under the cache's per-key lock, so jobs
 * starting together fetch once), keeps the cache within `maxSize` (least recently used first;
 * the ones just got are the most recent), and says how the job sees it.
 */
export async function prepareToolcache(cache: CacheSpec, target: ToolcacheTarget): Promise<JobToolcache> {
  const dir = join(target.workloadMount, cache.dir);
  await mkdir(dir, { recursive: true });
  const [{ ToolchainCache }, { toolchainKey }] = await Promise.all([import('../../cache/cache.js'), import('../../cache/key.js')]);
  const toolchains = new ToolchainCache({
    dir,
    ...(cache.registry && { registry: cache.registry, registryOptions: { insecure: target.insecureRegistries } }),
    ...(cache.installer && { installer: cache.installer }),
    log: (line) => target.log(`toolcache: ${line}`),
  });
  const entries: string[] = [];
  try {
    for (const ref of cache.toolchains) {
      const { tool, version } = parseToolchainRef(ref);
      try {
        const got = await toolchains.get(toolchainKey(tool, version));
        if (got.source !== 'local') target.log(`toolcache: ${ref} from the ${got.source} in ${got.seconds.toFixed(1)} s`);
        entries.push(relative(dir, got.path));
      } catch (err) {
        if (!isBuildfleetError(err)) throw err;
        throw new BuildfleetError(err.kind, `${target.node}: toolchain ${ref} for the job: ${err.message}`, { cause: err });
      }
    }
    await toolchains.gc({ maxSize: cache.maxSize });
  } finally {
    await toolchains.close();
  }
  return { binds: [`${dir}:${JOB_TOOLCACHE}:ro`], env: toolcacheEnv(entries, entries.length > 0 ? await target.imagePath() : undefined) };
}
