import { formatReference } from '../oci/reference.js';
import { layerCompression } from '../oci/media-types.js';
import { formatPlatform } from '../oci/platform.js';
import type { ImageSource, ResolveOptions } from '../transports/types.js';
import { resolveImage } from '../transports/resolve.js';

export type ImageSummary = {
  reference: string;
  manifestDigest: string;
  manifestMediaType: string;
  platform: string;
  created?: string;
  /** Platforms of the index the manifest came from, when it came from one. */
  indexPlatforms?: string[];
  configDigest: string;
  layers: Array<{ digest: string; diffId: string; size: number; mediaType: string; compression: string }>;
  totalSize: number;
  config: {
    Env?: string[];
    Cmd?: string[];
    Entrypoint?: string[];
    WorkingDir?: string;
    User?: string;
    Labels?: Record<string, string>;
    ExposedPorts?: string[];
    Volumes?: string[];
    StopSignal?: string;
    Healthcheck?: unknown;
  };
  history: number;
};

export async function inspectImage(source: ImageSource, options: ResolveOptions = {}): Promise<ImageSummary> {
  const image = await resolveImage(source, options.platform);
  const runtime = image.config.config ?? {};
  const config: ImageSummary['config'] = {};
  if (runtime.Env) config.Env = runtime.Env;
  if (runtime.Cmd) config.Cmd = runtime.Cmd;
  if (runtime.Entrypoint) config.Entrypoint = runtime.Entrypoint;
  if (runtime.WorkingDir) config.WorkingDir = runtime.WorkingDir;
  if (runtime.User) config.User = runtime.User;
  if (runtime.Labels) config.Labels = runtime.Labels;
  if (runtime.ExposedPorts) config.ExposedPorts = Object.keys(runtime.ExposedPorts);
  if (runtime.Volumes) config.Volumes = Object.keys(runtime.Volumes);
  if (runtime.StopSignal) config.StopSignal = runtime.StopSignal;
  if (runtime.Healthcheck) config.Healthcheck = runtime.Healthcheck;
  const layers = image.manifest.layers.map((layer, i) => ({
    digest: layer.digest,
    diffId: image.config.rootfs.diff_ids[i] ?? '',
    size: layer.size,
    mediaType: layer.mediaType,
    compression: layerCompression(layer.mediaType),
  }));
  return {
    reference: formatReference(source.reference),
    manifestDigest: image.manifestDigest,
    manifestMediaType: image.manifestMediaType,
    platform: formatPlatform({ os: image.config.os, architecture: image.config.architecture, ...(image.config.variant && { variant: image.config.variant }) }),
    ...(image.config.created && { created: image.config.created }),
    ...(image.index && { indexPlatforms: image.index.index.manifests.map((entry) => (entry.platform ? formatPlatform(entry.platform) : 'unknown')) }),
    configDigest: image.manifest.config.digest,
    layers,
    totalSize: layers.reduce((sum, layer) => sum + layer.size, 0) + image.manifest.config.size,
    config,
    history: image.config.history?.length ?? 0,
  };
}
