import type Docker from 'dockerode';
import { parseReference, type ImageReference } from '../oci/reference.js';
import type { RegistryOptions } from '../registry/index.js';
import type { ImageDestination, ImageSource } from './types.js';
import { openRegistrySource, openRegistryDestination } from './registry.js';
import { openArchiveSource, openArchiveDestination } from './docker-archive.js';
import { openDaemonSource, openDaemonDestination } from './docker-daemon.js';
import { openOciLayoutSource, openOciLayoutDestination } from './oci-layout.js';

export * from './types.js';

export type TransportOptions = {
  /** The Docker Engine for docker-daemon: references; default from DOCKER_HOST. */
  docker?: Docker;
  /** Registry client settings: credentials, insecure hosts, CA file, retries. */
  registry?: RegistryOptions;
  /** Where sources and destinations stage temp files (a docker save, archive layers). */
  tmpDir?: string;
};

export async function openSource(reference: string | ImageReference, options: TransportOptions = {}): Promise<ImageSource> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  switch (ref.transport) {
    case 'registry':
      return openRegistrySource(ref, options.registry ?? {});
    case 'docker-archive':
      return openArchiveSource(ref, options);
    case 'docker-daemon':
      return openDaemonSource(ref, options);
    case 'oci':
      return openOciLayoutSource(ref);
  }
}

export async function openDestination(reference: string | ImageReference, options: TransportOptions = {}): Promise<ImageDestination> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  switch (ref.transport) {
    case 'registry':
      return openRegistryDestination(ref, options.registry ?? {});
    case 'docker-archive':
      return openArchiveDestination(ref, options);
    case 'docker-daemon':
      return openDaemonDestination(ref, options);
    case 'oci':
      return openOciLayoutDestination(ref);
  }
}
