import { nonNegativeInt } from '../numbers.js';

/**
 * SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/): the time to use
 * instead of now (or instead of the source's times) so the same input gives the same bytes.
 * An explicit value wins over the environment's; an empty variable counts as unset.
 */
export function sourceDateEpoch(explicit: number | undefined, env: Record<string, string | undefined> = process.env): number | undefined {
  if (explicit !== undefined) return explicit;
  const value = env.SOURCE_DATE_EPOCH;
  return value ? nonNegativeInt(value, 'SOURCE_DATE_EPOCH') : undefined;
}

/** An image time (config `created`, history) for seconds since the epoch. */
export function imageTime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString();
}
