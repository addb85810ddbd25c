import { checkImagePlatform } from '../oci/platform.js';
import { formatReference } from '../oci/reference.js';
import type { Platform } from '../oci/schemas.js';
import type { ImageSource, ResolvedImage } from '../transports/types.js';

/**
 * The source's image for `platform`. Transports choose from an index themselves; an image
 * without one is checked here, once for every transport, when a platform was asked for (without
 * one, any single-platform image is what was meant).
 */
export async function resolveImage(source: ImageSource, platform: Platform | undefined): Promise<ResolvedImage> {
  const image = await source.resolve(platform ? { platform } : {});
  if (platform && !image.index) checkImagePlatform(image.config, platform, formatReference(source.reference));
  return image;
}
