import { MediaType } from '../../imagebuilder/oci/media-types.js';
import type { ArchiveReference } from '../../imagebuilder/oci/reference.js';
import type { ImageDestination, ImageSource } from '../../imagebuilder/transports/types.js';

/** Helpers for the transport tests: references, a bare copy, hand-made manifests. */

export const archiveRef = (path: string, name?: string, tag?: string): ArchiveReference => ({
  transport: 'docker-archive',
  path,
  ...(name !== undefined && { name }),
  ...(tag !== undefined && { tag }),
});

/**
 * Copies one image with nothing but the transport calls, without the copy engine: the config and
 * the layers in order, then the manifest as it is, then commit; `dst` is aborted on failure.
 */
export async function copyBlobsAndManifest(src: ImageSource, dst: ImageDestination): Promise<void> {
  try {
    const image = await src.resolve();
    const { config, layers } = image.manifest;
    await dst.putBlob(() => src.openBlob(config), { mediaType: config.mediaType, digest: config.digest, size: config.size });
    for (const layer of layers) {
      await dst.putBlob(() => src.openBlob(layer), { mediaType: layer.mediaType, digest: layer.digest, size: layer.size });
    }
    await dst.putManifest(image.manifestBytes, image.manifestMediaType);
    await dst.commit();
  } catch (err) {
    await dst.abort();
    throw err;
  }
}

type ManifestBytes = { digest: string; size: number };

/** The bytes of an OCI image index over two image manifests: linux/amd64 and linux/arm64/v8. */
export function amd64Arm64Index(amd64: ManifestBytes, arm64: ManifestBytes): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: amd64.digest, size: amd64.size, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: MediaType.ociManifest, digest: arm64.digest, size: arm64.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ],
    }),
  );
}
