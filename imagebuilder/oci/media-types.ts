/** Media types of the Docker schema2 and OCI image formats. */
export const MediaType = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerZstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
} as const;

export type Compression = 'none' | 'gzip' | 'zstd';
export type ManifestFormat = 'docker' | 'oci';

export const manifestMediaTypes: readonly string[] = [MediaType.dockerManifest, MediaType.ociManifest];
export const indexMediaTypes: readonly string[] = [MediaType.dockerManifestList, MediaType.ociIndex];

/** What a registry client sends as Accept when it fetches a manifest. */
export const manifestAccept = [...manifestMediaTypes, ...indexMediaTypes].join(', ');

export function isManifestMediaType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && manifestMediaTypes.includes(mediaType);
}

export function isIndexMediaType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && indexMediaTypes.includes(mediaType);
}

export function layerCompression(mediaType: string): Compression {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd') || mediaType.endsWith('.tar.zstd')) return 'zstd';
  return 'none';
}

export function layerMediaType(format: ManifestFormat, compression: Compression): string {
  if (format === 'oci') {
    return compression === 'gzip' ? MediaType.ociLayerGzip : compression === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayer;
  }
  return compression === 'gzip' ? MediaType.dockerLayerGzip : compression === 'zstd' ? MediaType.dockerLayerZstd : MediaType.dockerLayer;
}

export function configMediaType(format: ManifestFormat): string {
  return format === 'oci' ? MediaType.ociConfig : MediaType.dockerConfig;
}

export function manifestMediaType(format: ManifestFormat): string {
  return format === 'oci' ? MediaType.ociManifest : MediaType.dockerManifest;
}

export function formatOfManifestMediaType(mediaType: string): ManifestFormat {
  return mediaType === MediaType.dockerManifest || mediaType === MediaType.dockerManifestList ? 'docker' : 'oci';
}

/** Compression from a blob's first bytes: `docker save` of newer engines gzips layers without saying so. */
export function sniffCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'none';
}
