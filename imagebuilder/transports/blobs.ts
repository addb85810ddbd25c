import type { Readable } from 'node:stream';
import type { ImageReference } from '../oci/reference.js';
import type { Descriptor } from '../oci/schemas.js';
import type { ImageDestination } from './types.js';

/**
 * Puts a blob unless the destination has it (or mounts it from `mountFrom`). True when it was
 * already there. The digest is known, so the destination checks the bytes where they land.
 */
export async function ensureBlob(destination: ImageDestination, descriptor: Descriptor, open: () => Promise<Readable>, mountFrom?: ImageReference): Promise<boolean> {
  if (await destination.hasBlob(descriptor, mountFrom)) return true;
  await destination.putBlob(open, { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size });
  return false;
}
