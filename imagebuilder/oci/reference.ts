import { BuildfleetError } from '../errors.js';
import { digestPattern } from './schemas.js';

/**
 * Image references in the transport convention of skopeo / containers-image:
 *   docker://HOST/REPO:TAG, or bare HOST/REPO[:TAG|@DIGEST]   a registry
 *   docker-daemon:NAME[:TAG]                                   a Docker Engine's image store
 *   docker-archive:PATH[:NAME:TAG]                             a `docker save` tarball
 *   oci:DIR[:TAG]                                              an OCI image layout directory
 */
export type RegistryReference = {
  transport: 'registry';
  /** host[:port] as written, with docker.io for Docker Hub. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
};
export type DaemonReference = { transport: 'docker-daemon'; name: string; tag?: string; digest?: string; imageId?: string };
export type ArchiveReference = { transport: 'docker-archive'; path: string; name?: string; tag?: string };
export type OciLayoutReference = { transport: 'oci'; path: string; tag?: string };
export type ImageReference = RegistryReference | DaemonReference | ArchiveReference | OciLayoutReference;

const DOCKER_HUB = 'docker.io';
const componentPattern = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[\w][\w.-]{0,127}$/;
const hostPattern = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;

/** Transports of containers-image that buildfleet does not speak: named so the error can say so. */
const otherTransports = ['dir', 'containers-storage', 'oci-archive', 'ostree', 'sif', 'tarball'];

function unknownTransport(input: string, name: string): BuildfleetError {
  return new BuildfleetError(
    'reference',
    `invalid image reference "${input}": unknown transport "${name}:" (use docker://, docker-daemon:, docker-archive:, oci: or HOST/REPO:TAG)`,
  );
}

function invalid(input: string, why: string): BuildfleetError {
  return new BuildfleetError('reference', `invalid image reference "${input}": ${why}`);
}

/** Splits NAME[:TAG][@DIGEST] the way Docker does: the tag colon comes after the last slash. */
function splitNamed(text: string, input: string): { name: string; tag?: string; digest?: string } {
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestPattern.test(digest)) throw invalid(input, `"${digest}" is not a sha256 digest`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagPattern.test(tag)) throw invalid(input, `"${tag}" is not a valid tag`);
  }
  if (rest === '') throw invalid(input, 'missing repository name');
  return { name: rest, ...(tag !== undefined && { tag }), ...(digest !== undefined && { digest }) };
}

/** Parses a registry reference with Docker's normalisation (busybox -> docker.io/library/busybox). */
export function parseRegistryReference(text: string, input = text): RegistryReference {
  const { name, tag, digest } = splitNamed(text, input);
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  const hasHost = slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['));
  let registry = hasHost ? first : DOCKER_HUB;
  let repository = hasHost ? name.slice(slash + 1) : name;
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!hostPattern.test(registry)) throw invalid(input, `"${registry}" is not a valid registry host`);
  // A colon left in the path is neither the tag's (the last one) nor a port (only the host has
  // one): `host:5000:bad` is no image docker.io/library/host:5000 either (Docker: "invalid reference format").
  if (name.slice(hasHost ? slash + 1 : 0).includes(':')) {
    throw invalid(input, `invalid reference format: "${name}" is not HOST[:PORT]/REPO (only the registry host has a port, and one ":TAG" ends the reference)`);
  }
  for (const component of repository.split('/')) {
    if (!componentPattern.test(component)) {
      throw invalid(input, `repository "${repository}" must be lowercase letters, digits and separators (. _ -)`);
    }
  }
  if (repository.length > 255) throw invalid(input, 'repository name longer than 255 characters');
  return { transport: 'registry', registry, repository, ...(tag !== undefined && { tag }), ...(digest !== undefined && { digest }) };
}

/** `PATH[:REST]`: the first colon ends the path, as in containers-image. */
function splitPath(body: string, input: string): { path: string; rest?: string } {
  const colon = body.indexOf(':');
  const path = colon < 0 ? body : body.slice(0, colon);
  if (path === '') throw invalid(input, 'missing path');
  return colon < 0 ? { path } : { path, rest: body.slice(colon + 1) };
}

export function parseReference(input: string): ImageReference {
  const text = input.trim();
  if (text === '') throw invalid(input, 'empty');
  if (text.startsWith('docker://')) return parseRegistryReference(text.slice('docker://'.length), input);
  if (text.startsWith('docker-daemon:')) {
    const body = text.slice('docker-daemon:'.length);
    if (/^sha256:[a-f0-9]{64}$/.test(body)) return { transport: 'docker-daemon', name: body, imageId: body };
    const named = splitNamed(body, input);
    return { transport: 'docker-daemon', ...named };
  }
  if (text.startsWith('docker-archive:')) {
    const { path, rest } = splitPath(text.slice('docker-archive:'.length), input);
    if (rest === undefined || rest === '') return { transport: 'docker-archive', path };
    const named = splitNamed(rest, input);
    if (named.digest) throw invalid(input, 'a docker-archive name cannot carry a digest');
    return { transport: 'docker-archive', path, name: named.name, ...(named.tag !== undefined && { tag: named.tag }) };
  }
  if (text.startsWith('oci:')) {
    const { path, rest } = splitPath(text.slice('oci:'.length), input);
    if (rest !== undefined && rest !== '' && !/^[A-Za-z0-9._:/@-]+$/.test(rest)) throw invalid(input, `"${rest}" is not a valid OCI layout tag`);
    return rest ? { transport: 'oci', path, tag: rest } : { transport: 'oci', path };
  }
  // A colon before the first slash is a transport unless it is HOST:PORT (localhost:5000/repo).
  const firstSegment = text.includes('/') ? text.slice(0, text.indexOf('/')) : '';
  const prefix = /^([a-z][a-z0-9+.-]*):/.exec(firstSegment);
  if (prefix && !/^[^:]+:\d+$/.test(firstSegment)) throw unknownTransport(input, prefix[1]!);
  if (!text.includes('/') && otherTransports.some((t) => text.startsWith(`${t}:`))) {
    throw unknownTransport(input, text.slice(0, text.indexOf(':')));
  }
  return parseRegistryReference(text, input);
}

export function formatReference(ref: ImageReference): string {
  switch (ref.transport) {
    case 'registry': {
      const suffix = ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`;
      return `docker://${ref.registry}/${ref.repository}${suffix}`;
    }
    case 'docker-daemon':
      if (ref.imageId) return `docker-daemon:${ref.imageId}`;
      return `docker-daemon:${ref.name}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`;
    case 'docker-archive':
      return `docker-archive:${ref.path}${ref.name ? `:${ref.name}:${ref.tag ?? 'latest'}` : ''}`;
    case 'oci':
      return `oci:${ref.path}${ref.tag ? `:${ref.tag}` : ''}`;
  }
}

/** Loopback registries speak plain HTTP, as Docker allows without configuration. */
export function isLoopbackHost(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(0, registry.indexOf(']') + 1) : registry.split(':')[0] ?? '';
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
