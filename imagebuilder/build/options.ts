import { BuildfleetError } from '../errors.js';
import { formatReference, parseReference, type DaemonReference, type RegistryReference } from '../oci/reference.js';

/**
 * `image build`'s flags turned into what the pipeline does, checked before anything is sent
 * anywhere (`usage` / `reference` errors, exit 2). Pure.
 */

export type KeyValues = Record<string, string>;

/**
 * `--build-arg K=V`; `--build-arg K` takes K from the environment, and is left out when it is
 * not set there (the docker CLI's rule).
 */
export function parseBuildArgs(values: readonly string[], env: Record<string, string | undefined>): KeyValues {
  const args: KeyValues = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    const key = eq < 0 ? value : value.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new BuildfleetError('usage', `--build-arg ${value}: expected NAME=VALUE (or NAME, taken from the environment)`);
    if (eq >= 0) args[key] = value.slice(eq + 1);
    else if (env[key] !== undefined) args[key] = env[key]!;
  }
  return args;
}

/** `--label K=V` (a bare K is an empty label, as with docker). */
export function parseLabels(values: readonly string[]): KeyValues {
  const labels: KeyValues = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    const key = eq < 0 ? value : value.slice(0, eq);
    if (key.trim() === '') throw new BuildfleetError('usage', `--label ${value}: expected KEY=VALUE`);
    labels[key] = eq < 0 ? '' : value.slice(eq + 1);
  }
  return labels;
}

/** Where the build ends: the name the engine tags, and (with --push) the registry image. */
export type BuildTarget = {
  /** NAME:TAG in the engine (the layered build; with --squash and no --push, the squashed image). */
  engineTag: string;
  /** The registry reference --push writes, when pushing. */
  registry?: RegistryReference;
  /** docker-daemon:NAME:TAG that a squash without --push replaces. */
  daemon: DaemonReference;
};

export function buildTarget(tag: string, push: boolean): BuildTarget {
  const ref = parseReference(tag);
  if (ref.transport === 'registry') {
    if (ref.digest) throw new BuildfleetError('usage', `--tag ${tag}: name a tag, not a digest (the digest is known only after the build)`);
    const name = `${ref.registry}/${ref.repository}`;
    const engineTag = `${name}:${ref.tag ?? 'latest'}`;
    return { engineTag, registry: { ...ref, tag: ref.tag ?? 'latest' }, daemon: { transport: 'docker-daemon', name, tag: ref.tag ?? 'latest' } };
  }
  if (ref.transport === 'docker-daemon' && !ref.imageId && !ref.digest) {
    if (push) throw new BuildfleetError('usage', `--push needs a registry --tag (HOST/REPO:TAG), not ${formatReference(ref)}`);
    const tagged = { ...ref, tag: ref.tag ?? 'latest' };
    return { engineTag: `${ref.name}:${tagged.tag}`, daemon: tagged };
  }
  throw new BuildfleetError('usage', `--tag ${tag}: expected HOST/REPO:TAG (or docker-daemon:NAME:TAG without --push); copy the result elsewhere with 'image copy'`);
}
