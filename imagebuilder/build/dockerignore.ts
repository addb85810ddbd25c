import { createRequire } from 'node:module';
import type { Ignore } from '@balena/dockerignore';

// A CommonJS module whose typings declare an ES default export it does not have.
const dockerignore = createRequire(import.meta.url)('@balena/dockerignore') as (options?: { ignorecase?: boolean }) => Ignore;

/**
 * `.dockerignore` with Docker's own semantics (moby's patternmatcher, as the docker CLI applies
 * it): patterns are cleaned paths relative to the context root (`/x` = `x`, `*.md` matches only
 * at the top, `**` any number of directories), a pattern that matches a directory excludes
 * everything below it, `!pattern` re-includes, the last matching line wins, `#` starts a comment.
 * The matching is @balena/dockerignore's (a port of that code, already installed as dockerode's
 * dependency); the rules the docker CLI adds around it are here: the Dockerfile and
 * `.dockerignore` itself are always sent, and an excluded directory is still walked when some
 * `!` line might re-include something below it.
 */
export type ContextFilter = {
  /** True when the path (relative, `/`-separated) is left out of the context. */
  excludes(path: string): boolean;
  /** Whether an excluded directory must still be walked (some `!` line could re-include below it). */
  walkExcluded: boolean;
};

export function contextFilter(dockerignoreText: string | undefined, alwaysSent: readonly string[] = []): ContextFilter {
  const lines = (dockerignoreText ?? '').split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
  const matcher = dockerignore({ ignorecase: false }).add(lines);
  const kept = new Set(alwaysSent.map(normalise));
  return {
    excludes: (path) => {
      const clean = normalise(path);
      return !kept.has(clean) && matcher.ignores(clean);
    },
    walkExcluded: lines.some((line) => line.startsWith('!')) || kept.size > 0,
  };
}

function normalise(path: string): string {
  return path.replace(/\\/g, '/').replace(/^\.?\/+/, '').replace(/\/+$/, '');
}
