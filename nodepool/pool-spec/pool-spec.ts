import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { DEFAULT_DISK_SIZES } from './defaults.js';
import { POOL_NAME, POOL_NAME_RULE } from './pool-name.js';
import { describeParseError } from '../../imagebuilder/oci/parse-error.js';

export { checkPoolName, POOL_NAME, POOL_NAME_RULE } from './pool-name.js';

/**
 * The pool spec: what an operator writes (YAML or JSON) and `pool apply` converges to.
 * Every field but the name has a default that suits a small local pool.
 */

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "512M", "20G", "1.5g", "1048576": bytes, in powers of 1024 like truncate(1) and mkfs. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(value);
  if (!match) return undefined;
  const bytes = Math.round(Number(match[1]) * SIZE_UNITS[match[2]!.toLowerCase()]!);
  return bytes > 0 ? bytes : undefined;
}

const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(value)} (use bytes or a number with K, M, G or T)` });
    return z.NEVER;
  }
  return bytes;
});

const MIN_DISK = 64 * 1024 ** 2; // smaller than this, ext4 plus a dockerd data-root do not fit
/** The largest disk a cloud offers (64 TiB, GCE's limit); beyond it a size is a typo, and past 2^53 bytes not even a number. */
export const MAX_DISK = 64 * 1024 ** 4;

const disk = z
  .object({
    size,
    /** Per-disk I/O budget (blkio throttle on its loop device), like a cloud disk's limit; 0 = none. */
    readBytesPerSecond: z.number().int().nonnegative().default(0),
    writeBytesPerSecond: z.number().int().nonnegative().default(0),
    iops: z.number().int().nonnegative().default(0),
    /**
     * An ext4 journal on the local provider's disk. Off by default: a node's disks are never
     * mounted again once it went down (such a node is replaced, not repaired), so the journal's
     * crash recovery buys nothing, and it cost a large direct pre-pull about a fifth of its time
     * (4 layers extracted at once, 2 cores: 10.1 s with it, 7.9 s without, median of 5).
     */
    journal: z.boolean().default(false),
  })
  .strict()
  .refine((d) => d.size >= MIN_DISK, { message: `must be at least ${MIN_DISK / 1024 ** 2}M`, path: ['size'] })
  .refine((d) => d.size <= MAX_DISK, { message: `must be at most ${MAX_DISK / 1024 ** 4}T`, path: ['size'] });

/** A disk is written as its size alone ("20G") or as an object with an I/O budget. */
const diskOrSize = z.preprocess((value) => (typeof value === 'string' || typeof value === 'number' ? { size: value } : value), disk);

/** A disk of this size as a pool spec makes it by default (no budget, no journal): what a benchmark's scratch disk should be to stand for a node's. */
export function defaultDisk(sizeBytes: number): DiskSpec {
  return diskOrSize.parse(sizeBytes);
}

export const PROVIDERS = ['local', 'gke'] as const;
export const DISK_LAYOUTS = ['dual', 'single'] as const;
export const REMEDIATION_POLICIES = ['drain-then-restart', 'kill-on-first-failure', 'none'] as const;
/**
 * How a new node gets the images: `pull`, the runtime's own pull; `direct`, buildfleet fetches,
 * verifies, decompresses on every core and extracts the layers in parallel into the runtime's
 * image store before the runtime starts (anything it cannot do exactly as the runtime would is
 * left to the runtime's pull); `preloaded-disk`, a runtime disk
 * baked once per image digest and cloned copy-on-write for each node (GKE's secondary boot disks,
 * locally), which the node still verifies by digest before it takes jobs.
 */
export const PREPULL_MODES = ['pull', 'direct', 'preloaded-disk'] as const;

/**
 * A pool's name is also a directory name in the state dir and part of host-wide cgroup names, so
 * this rule is what keeps a name from ever reaching a path outside the state dir.
 */
/** GKE's rule for the startup taint the cluster autoscaler treats as "node still starting". */
export const STARTUP_TAINT_PREFIX = 'startup-taint.cluster-autoscaler.kubernetes.io/';
const GKE_LABEL_KEY = /^[a-z]([a-z0-9_.\/-]{0,61}[a-z0-9])?$/;
const GKE_LABEL_VALUE = /^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$|^$/;

/**
 * `provider: gke`: where the node pool goes (project, location, cluster) and what its nodes get.
 * The runtime stays on the boot disk (type, size, IOPS); builds get a second device, a local SSD
 * (raw block, `localNvmeSsdBlockConfig`, or the older `localSsdCount`), so build I/O cannot stall
 * the runtime. Field names follow container.v1's NodeConfig where there is one.
 */
const gkeBlock = z
  .object({
    project: z.string().regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, 'a GCP project id: 6-30 of a-z, 0-9, "-", starting with a letter'),
    /** A region (us-central1) or a zone (us-central1-a). */
    location: z.string().regex(/^[a-z]+-[a-z]+\d+(-[a-z])?$/, 'a region (us-central1) or zone (us-central1-a)'),
    cluster: z.string().regex(/^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$/, 'a GKE cluster name: 1-40 of a-z, 0-9, "-", starting with a letter'),
    machineType: z.string().regex(/^[a-z0-9]+(-[a-z0-9]+)*$/, 'a machine type such as n2-standard-8').default('n2-standard-8'),
    imageType: z.string().min(1).default('COS_CONTAINERD'),
    /** The runtime's disk: images and container layers live here. */
    bootDisk: z
      .object({
        type: z.string().regex(/^(pd|hyperdisk)-[a-z-]+$/, 'a disk type such as pd-balanced, pd-ssd or hyperdisk-balanced').default('pd-balanced'),
        sizeGb: z.number().int().min(10).max(65536).default(100),
        /** Hyperdisk only, like GKE itself. */
        provisionedIops: z.number().int().positive().optional(),
        provisionedThroughput: z.number().int().positive().optional(),
      })
      .strict()
      .refine((d) => d.type.startsWith('hyperdisk-') || (d.provisionedIops === undefined && d.provisionedThroughput === undefined), { message: 'provisionedIops and provisionedThroughput are for hyperdisk types only (GKE refuses them on pd-*)', path: ['type'] })
      .prefault({}),
    /** The builds' device: local SSDs as raw block devices (the agent formats and mounts them). */
    workloadDevice: z
      .object({
        type: z.enum(['localNvmeSsdBlock', 'localSsd']).default('localNvmeSsdBlock'),
        count: z.number().int().min(1).max(24).default(1),
      })
      .strict()
      .prefault({}),
    labels: z
      .record(z.string().regex(GKE_LABEL_KEY, 'a label key: lowercase, at most 63 characters'), z.string().regex(GKE_LABEL_VALUE, 'a label value: at most 63 of letters, digits, "_", ".", "-"'))
      .default({}),
    kubeletConfig: z
      .object({
        imageGcHighThresholdPercent: z.number().int().min(10).max(85).default(85),
        imageGcLowThresholdPercent: z.number().int().min(10).max(85).default(80),
      })
      .strict()
      .refine((k) => k.imageGcLowThresholdPercent < k.imageGcHighThresholdPercent, { message: 'must be below imageGcHighThresholdPercent', path: ['imageGcLowThresholdPercent'] })
      .prefault({}),
    /** Cluster-autoscaler bounds; without them the pool keeps `nodes`. */
    autoscaling: z
      .object({ min: z.number().int().min(0).max(1000), max: z.number().int().min(1).max(1000) })
      .strict()
      .refine((a) => a.min <= a.max, { message: 'must not exceed max', path: ['min'] })
      .optional(),
    /** Nodes register with it; the agent removes it once the build image is pinned and the runtime healthy. */
    startupTaint: z
      .object({
        key: z
          .string()
          .refine((key) => key.startsWith(STARTUP_TAINT_PREFIX) && key.length > STARTUP_TAINT_PREFIX.length, `must start with ${STARTUP_TAINT_PREFIX} (the cluster autoscaler counts such a node as still starting)`)
          .default(`${STARTUP_TAINT_PREFIX}buildfleet-prepull`),
        value: z.string().default('true'),
      })
      .strict()
      .prefault({}),
    /** A disk image holding the build images, attached at boot (secondaryBootDisks, CONTAINER_IMAGE_CACHE). */
    secondaryBootDisk: z.string().regex(/^([a-z0-9-]+|(projects\/[a-z][a-z0-9-]+\/)?global\/images\/[a-z0-9-]+)$/, 'a disk image name, global/images/NAME or projects/P/global/images/NAME').optional(),
    /** Image streaming (gcfsConfig); needs the images in Artifact Registry. */
    imageStreaming: z.boolean().default(false),
  })
  .strict();

/** `TOOL@VERSION`, as `buildfleet cache get TOOL VERSION` names a toolchain (same rules as cache/key.ts). */
export const TOOLCHAIN_REF = /^[a-z0-9][a-z0-9._-]{0,63}@[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

/**
 * `cache:`: the node's toolchain cache (`cache/`), a directory on its workload disk. Jobs see it
 * read-only at /opt/hostedtoolcache ($RUNNER_TOOL_CACHE), with the declared toolchains fetched
 * before the job starts (registry, else installer) and their `bin` first on PATH. The agent
 * evicts least recently used entries when the workload disk runs low on space.
 */
const cacheBlock = z
  .object({
    /** HOST/REPO the entries are shared through (OCI artifacts); without it each node's cache is its own. */
    registry: z
      .string()
      .regex(/^[A-Za-z0-9.-]+(:\d+)?\/[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/, 'HOST/REPOSITORY, e.g. registry.example.com/ci/toolchains')
      .optional(),
    /** The cache's size limit: entries beyond it go, least recently used first. */
    maxSize: size,
    /** The agent evicts entries (LRU) while the workload disk has less than this share free. */
    minFreeRatio: z.number().gt(0).lt(1).default(0.1),
    /** Its directory on the workload disk. */
    dir: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'a directory name (a-z, 0-9, ".", "_", "-")').default('toolcache'),
    /** Toolchains every job gets on its PATH, `TOOL@VERSION` (node@20.11.0), fetched before the job starts. */
    toolchains: z.array(z.string().regex(TOOLCHAIN_REF, 'TOOL@VERSION, e.g. node@20.11.0')).default([]),
    /** Installer for toolchains the registry does not have (sh -c CMD with TOOL, VERSION, PREFIX; see cache/README.md). */
    installer: z.string().min(1).optional(),
  })
  .strict();

export const poolSpecSchema = z
  .object({
    name: z.string().regex(POOL_NAME, POOL_NAME_RULE),
    provider: z.enum(PROVIDERS).default('local'),
    nodes: z.number().int().min(0).max(64),
    disks: z
      .object({
        /** Holds the runtime's data-root (images, container layers): what `docker ps` depends on. */
        runtime: diskOrSize.prefault(DEFAULT_DISK_SIZES.runtime),
        /** Mounted where builds run, so build I/O cannot saturate the runtime's disk. */
        workload: diskOrSize.prefault(DEFAULT_DISK_SIZES.workload),
        /**
         * `dual`: the two disks above. `single`: one disk (disks.runtime, with its budget) holds the
         * data-root and the builds' work dirs, as a node without a workload disk does; disks.workload
         * is not used. For comparing the two (bench disk-isolation).
         */
        layout: z.enum(DISK_LAYOUTS).default('dual'),
      })
      .strict()
      .prefault({}),
    /** Pre-pulled on every node; a node takes jobs only when all are present by digest. The first is the build image. */
    images: z.array(z.string().min(1)).min(1, 'give at least one image: the first is the build image every node pre-pulls'),
    /** Registries the node's runtime may reach over plain HTTP (loopback always may). */
    insecureRegistries: z.array(z.string()).default([]),
    prepull: z
      .object({ mode: z.enum(PREPULL_MODES).default('direct') })
      .strict()
      .prefault({}),
    probe: z
      .object({
        intervalSeconds: z.number().positive().default(10),
        timeoutSeconds: z.number().positive().default(10),
        /** Consecutive failures before the runtime counts as hung (the field's health monitor uses 1). */
        failureThreshold: z.number().int().min(1).default(3),
      })
      .strict()
      .prefault({}),
    saturation: z
      .object({
        /** Share of time the disk was busy (diskstats io_ticks) over the window. */
        utilization: z.number().gt(0).max(1).default(0.9),
        /** Average requests in flight (diskstats weighted time) over the window. */
        queueDepth: z.number().positive().default(8),
        windowSeconds: z.number().positive().default(10),
        /** Hysteresis: Saturated clears only below these, for a whole window. */
        clearUtilization: z.number().gt(0).max(1).default(0.6),
        clearQueueDepth: z.number().positive().default(4),
        /** Space or inodes left below this share also count as saturated. */
        minFreeRatio: z.number().min(0).max(1).default(0.05),
        sampleSeconds: z.number().positive().default(1),
      })
      .strict()
      .refine((s) => s.clearUtilization <= s.utilization, { message: 'must not exceed utilization', path: ['clearUtilization'] })
      .refine((s) => s.clearQueueDepth <= s.queueDepth, { message: 'must not exceed queueDepth', path: ['clearQueueDepth'] })
      .prefault({}),
    remediation: z
      .object({
        policy: z.enum(REMEDIATION_POLICIES).default('drain-then-restart'),
        /** How long running builds may go on before the runtime restarts anyway (live-restore keeps them). */
        drainTimeoutSeconds: z.number().nonnegative().default(600),
        /** No second restart within this time: a node that stays hung stays cordoned instead of looping. */
        cooldownSeconds: z.number().nonnegative().default(600),
      })
      .strict()
      .prefault({}),
    /** dockerd --live-restore: containers survive a runtime restart. Off only to show what the field's monitor does. */
    liveRestore: z.boolean().default(true),
    /** The node's toolchain cache on its workload disk; none without this block. */
    cache: cacheBlock.optional(),
    /** Where and how a `provider: gke` pool is made; required for gke, refused for local. */
    gke: gkeBlock.optional(),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (spec.provider === 'gke' && !spec.gke) ctx.addIssue({ code: 'custom', path: ['gke'], message: 'required when provider is gke (give at least project, location and cluster)' });
    if (spec.provider !== 'gke' && spec.gke) ctx.addIssue({ code: 'custom', path: ['gke'], message: `only for provider: gke (this spec says provider: ${spec.provider})` });
    if (spec.provider === 'gke' && spec.cache) ctx.addIssue({ code: 'custom', path: ['cache'], message: 'only for provider: local so far (GKE nodes do not mount the toolchain cache yet)' });
    const bounds = spec.gke?.autoscaling;
    if (bounds && (spec.nodes < bounds.min || spec.nodes > bounds.max)) ctx.addIssue({ code: 'custom', path: ['nodes'], message: `must be within gke.autoscaling (${bounds.min}-${bounds.max})` });
  });

export type PoolSpecInput = z.input<typeof poolSpecSchema>;
export type PoolSpec = z.output<typeof poolSpecSchema>;
export type DiskSpec = PoolSpec['disks']['runtime'];
export type GkeSpec = NonNullable<PoolSpec['gke']>;
export type CacheSpec = NonNullable<PoolSpec['cache']>;

/** Validates a spec; a bad one fails with one line naming the field (`disks.runtime.size: ...`). */
export function parsePoolSpec(input: unknown, source = 'pool spec'): PoolSpec {
  const result = poolSpecSchema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
  const more = result.error.issues.length > 1 ? ` (and ${result.error.issues.length - 1} more)` : '';
  throw new BuildfleetError('usage', `${source}: ${field}: ${issue.message}${more}`);
}

/** Reads a YAML or JSON spec file (JSON is YAML). */
export async function loadPoolSpec(path: string): Promise<PoolSpec> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new BuildfleetError('not-found', `${path}: cannot read pool spec (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (err) {
    throw new BuildfleetError('usage', `${path}: not valid YAML or JSON at ${describeParseError(err, text)}`);
  }
  return parsePoolSpec(data, path);
}
