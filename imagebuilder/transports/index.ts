import type Docker from 'dockerode';
import { parseReference, type ImageReference } from '../oci/reference.js';
import type { RegistryOptions } from '../registry/index.js';
import type { ImageDestination, ImageSource } from './types.js';

export * from './types.js';
export { resolveImage } from './resolve.js';
export { ensureBlob } from './blobs.js';

export type TransportOptions = {
  /** The Docker Engine for docker-daemon: references; default from DOCKER_HOST. */
  docker?: Docker;
  /** Registry client settings: credentials, insecure hosts, CA file, retries. */
  registry?: RegistryOptions;
  /** Where sources and destinations stage temp files (a docker save, archive layers). */
  tmpDir?: string;
};

// Each transport loads on first use: a registry-only run never loads dockerode (a quarter of a
// second of start-up for every CLI call).

export async function openSource(reference: string | ImageReference, options: TransportOptions = {}): Promise<ImageSource> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  switch (ref.transport) {
    case 'registry':
      return (await import('./registry.js')).openRegistrySource(ref, options.registry ?? {});
    case 'docker-archive':
      return (await import('./docker-archive.js')).openArchiveSource(ref, options);
    case 'docker-daemon':
      return (await import('./docker-daemon.js')).openDaemonSource(ref, options);
    case 'oci':
      return (await import('./oci-layout.js')).openOciLayoutSource(ref);
  }
}

export async function openDestination(reference: string | ImageReference, options: TransportOptions = {}): Promise<ImageDestination> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  switch (ref.transport) {
    case 'registry':
      return (await import('./registry.js')).openRegistryDestination(ref, options.registry ?? {});
    case 'docker-archive':
      return (await import('./docker-archive.js')).openArchiveDestination(ref, options);
    case 'docker-daemon':
      return (await import('./docker-daemon.js')).openDaemonDestination(ref, options);
    case 'oci':
      return (await import('./oci-layout.js')).openOciLayoutDestination(ref);
  }
}
