/**
 * The per-node toolchain cache: language versions installed lazily, kept on the node's workload
 * disk in the hosted runners' tool-cache layout, shared through a registry as OCI artifacts.
 */
export { ToolchainCache, type CacheOptions, type GetResult, type ListedEntry } from './cache.js';
export { toolchainKey, detectLibc, registryTag, archDir, type ToolchainKey, type Libc } from './key.js';
export { CacheMetrics } from './metrics.js';
export { planEviction, parseSize, type GcTarget, type GcResult } from './gc.js';
export { LocalStore, type EntryRecord } from './store.js';
export { TOOLCHAIN_ARTIFACT_TYPE, artifactManifest } from './remote.js';
