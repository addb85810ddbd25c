import type { Compression } from '../oci/media-types.js';
import { checkCompressionLevel } from '../compress/levels.js';
import { sourceDateEpoch } from '../mutate/time.js';
import type { SquashOptions } from './squash.js';

/** What a user asks of a squash (the CLI's flags, each already a number or a compression). */
export type SquashSettings = {
  layers: number;
  fromLayer: number;
  compression: Compression;
  level?: number;
  /** Unset: the environment's SOURCE_DATE_EPOCH, if any. */
  sourceDateEpoch?: number;
};

/**
 * The squash options for what a user asked, checked before any image is opened: a level the
 * compression does not take and a SOURCE_DATE_EPOCH that is no whole number >= 0 are `usage`
 * errors (exit 2).
 */
export function squashOptionsFrom(settings: SquashSettings, env: Record<string, string | undefined> = process.env): SquashOptions {
  checkCompressionLevel(settings.compression, settings.level);
  const epoch = sourceDateEpoch(settings.sourceDateEpoch, env);
  return {
    layers: settings.layers,
    fromLayer: settings.fromLayer,
    compression: settings.compression,
    ...(settings.level !== undefined && { level: settings.level }),
    ...(epoch !== undefined && { sourceDateEpoch: epoch }),
  };
}
