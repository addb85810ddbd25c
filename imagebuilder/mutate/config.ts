import { sha256Digest } from '../oci/digest.js';
import { configMediaType, type ManifestFormat } from '../oci/media-types.js';
import type { Descriptor, HistoryEntry, ImageConfig } from '../oci/schemas.js';

/*
 * Edits of an image config, each returning a new config (go-containerregistry's `mutate` is the
 * model). Every edit spreads the original first, so the keys it had keep their places and new
 * keys come last: the same edits of the same config give the same bytes (digests are checked).
 */

/** The config with its `created` time set; unchanged when `created` is undefined. */
export function withCreated(config: ImageConfig, created: string | undefined): ImageConfig {
  return { ...config, ...(created && { created }) };
}

/** The config with `labels` added to the runtime config's (replacing those of the same name). */
export function withLabels(config: ImageConfig, labels: Record<string, string>): ImageConfig {
  const runtime = config.config ?? {};
  return { ...config, config: { ...runtime, Labels: { ...(runtime.Labels ?? {}), ...labels } } };
}

/** A layer to append: its diff_id and the history entry that says where it came from. */
export type AddedLayer = { diffId: string; history: HistoryEntry };

/**
 * The config with its layers above the lowest `keep` replaced by `added`: the kept layers'
 * diff_ids and history entries stay as they are; the history entries of the replaced layers stay
 * too, marked empty (the history still tells how the image was made), and one entry per added
 * layer follows them.
 */
export function replaceLayers(config: ImageConfig, keep: number, added: AddedLayer[]): ImageConfig {
  let layersSeen = 0;
  const history: HistoryEntry[] = (config.history ?? []).map((entry) => {
    if (entry.empty_layer) return entry;
    return ++layersSeen <= keep ? entry : { ...entry, empty_layer: true };
  });
  history.push(...added.map((layer) => layer.history));
  return {
    ...config,
    rootfs: { type: 'layers', diff_ids: [...config.rootfs.diff_ids.slice(0, keep), ...added.map((layer) => layer.diffId)] },
    history,
  };
}

/** The config's blob (compact JSON) and its descriptor in the given manifest format. */
export function configBlob(config: ImageConfig, format: ManifestFormat): { bytes: Buffer; descriptor: Descriptor } {
  const bytes = Buffer.from(JSON.stringify(config));
  return { bytes, descriptor: { mediaType: configMediaType(format), digest: sha256Digest(bytes), size: bytes.length } };
}
