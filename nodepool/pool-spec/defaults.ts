/**
 * Defaults of the pool spec that the CLI shows in its help too. Apart from pool-spec.ts so the
 * CLI can name them without loading zod and yaml at start-up.
 */
export const DEFAULT_DISK_SIZES = {
  /** The runtime's data-root: images and container layers. */
  runtime: '4G',
  /** Where builds run. */
  workload: '8G',
} as const;
