import { formatOfManifestMediaType, manifestMediaType, type ManifestFormat } from '../oci/media-types.js';
import type { Descriptor, Manifest } from '../oci/schemas.js';

/**
 * The manifest format an image is written in: the destination's, or the source's own where the
 * destination takes either (`keep`).
 */
export function manifestFormatFor(wanted: ManifestFormat | 'keep', sourceManifestMediaType: string): ManifestFormat {
  return wanted === 'keep' ? formatOfManifestMediaType(sourceManifestMediaType) : wanted;
}

/** A manifest in the given format. Docker schema2 has no annotations; OCI keeps the source's. */
export function buildManifest(format: ManifestFormat, config: Descriptor, layers: Descriptor[], original?: Manifest): Buffer {
  const strip = (descriptor: Descriptor): Descriptor => {
    const { mediaType, digest, size, urls, annotations } = descriptor;
    return { mediaType, digest, size, ...(urls && { urls }), ...(format === 'oci' && annotations && { annotations }) };
  };
  const manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: manifestMediaType(format),
    config: strip(config),
    layers: layers.map(strip),
  };
  if (format === 'oci' && original?.annotations) manifest.annotations = original.annotations;
  return Buffer.from(JSON.stringify(manifest, null, 2));
}
