import { setMaxListeners } from 'node:events';
import { availableParallelism } from 'node:os';
import pLimit from 'p-limit';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import { sha256Digest, VerifyingStream } from '../../imagebuilder/oci/digest.js';
import { layerCompression, MediaType } from '../../imagebuilder/oci/media-types.js';
import { parseRegistryReference, type RegistryReference } from '../../imagebuilder/oci/reference.js';
import type { Descriptor } from '../../imagebuilder/oci/schemas.js';
import { resolveRegistryImage } from '../../imagebuilder/transports/registry.js';
import { RegistryClient } from '../../imagebuilder/registry/client.js';
import type { RegistryOptions } from '../../imagebuilder/registry/options.js';
import { resumableBlob, type ResumePolicy } from './blob-fetch.js';
import type { SharedBlobCache } from './blob-cache.js';
import { DockerImageStore, type CommitLayer } from './docker-store.js';
import { extractInChild } from './extract-child.js';
import { extractLayer } from './layer-extract.js';
import { UnsupportedLayer } from './layer-walk.js';
import { extractLayerNatively, nativeExtraction } from './native-extract.js';

/**
 * The direct pre-pull: buildfleet fetches an image's blobs itself (all layers at once, each
 * download resumed where it broke), verifies every digest, decompresses the layers on every core
 * and extracts them in parallel straight into the stopped engine's image store, where the
 * runtime's own pull downloads in threes, decompresses each gzip stream on one core and extracts
 * the layers one after another. The engine then starts with the image by digest, exactly as a
 * pull would have left it (same image id, RepoDigests, layers, files).
 */

export type InstallOptions = {
  /** The engine's data-root; the engine must not be running on it. */
  dataRoot: string;
  registry?: RegistryOptions;
  signal?: AbortSignal;
  /** Layers fetched and extracted at once (default: every core twice, at least 4). */
  concurrency?: number;
  /** Resumes of a broken download before giving up. */
  resume?: ResumePolicy;
  /** Blobs shared with the other nodes of this host: each is fetched from upstream once. */
  blobCache?: SharedBlobCache;
  /**
   * Layers of at least this many compressed bytes are extracted by a child process each, so that
   * their tar walks run on every core (default CHILD_PROCESS_MIN_BYTES: 16 MiB from 4 cores, none
   * on 2); smaller ones in this process.
   */
  childProcessMinBytes?: number;
  /**
   * How layers are written: `native` (the addon's extractor, where it is built: no GNU tar, no
   * pipe, nothing per entry on the main thread but tar-split's JSON) or `tar` (the JS walk feeding
   * GNU tar, big layers in child processes per `childProcessMinBytes`). Default: native where built.
   */
  extractWith?: 'native' | 'tar';
  /** Called as bytes arrive (blob bytes, all layers together). */
  onProgress?: (progress: { downloadedBytes: number; totalBytes: number }) => void;
};

export type InstallResult = {
  pinned: string;
  imageId: string;
  layers: number;
  /** Layers the store already held (shared with an image installed before). */
  reused: number;
  /** Blob bytes fetched from the registry by this install (the rest came from the host's blob cache). */
  downloadedBytes: number;
  fromCacheBytes: number;
  /** performance.now() when the last blob byte arrived, and when the image was committed. */
  downloadedAt: number;
  finishedAt: number;
};

type Plan = { repository: string; repo: string; pinnedDigest: string; config: Buffer; imageId: string; layers: Descriptor[]; diffIds: string[] };

/** Installs one image pinned by digest (`host/repo@sha256:...`). Throws UnsupportedLayer when the runtime's own pull must do it. */
export async function installImage(pinned: string, options: InstallOptions): Promise<InstallResult> {
  const ref = parseRegistryReference(pinned);
  if (!ref.digest) throw new BuildfleetError('usage', `direct pre-pull: ${pinned} is not pinned by digest`);
  const client = new RegistryClient(ref.registry, options.registry);
  try {
    const plan = await planImage(client, { ...ref, digest: ref.digest }, pinned);
    return await installPlan(client, plan, pinned, options);
  } finally {
    await client.close();
  }
}

async function planImage(client: RegistryClient, ref: RegistryReference & { digest: string }, pinned: string): Promise<Plan> {
  const image = await resolveRegistryImage(client, ref);
  for (const layer of image.manifest.layers) {
    if (layer.urls?.length || !LAYER_TYPES.has(layer.mediaType)) throw new UnsupportedLayer(`${pinned}: layer ${layer.digest} is of type ${layer.mediaType}, which the direct path leaves to the runtime`);
  }
  const diffIds = image.config.rootfs.diff_ids;
  if (diffIds.length !== image.manifest.layers.length) {
    throw new BuildfleetError('format', `${pinned}: the config lists ${diffIds.length} diff_ids for ${image.manifest.layers.length} layers`);
  }
  return { repository: `${ref.registry}/${ref.repository}`, repo: ref.repository, pinnedDigest: ref.digest, config: image.configBytes, imageId: sha256Digest(image.configBytes), layers: image.manifest.layers, diffIds };
}

async function installPlan(client: RegistryClient, plan: Plan, pinned: string, options: InstallOptions): Promise<InstallResult> {
  const store = new DockerImageStore(options.dataRoot);
  const chainIds: string[] = [];
  for (const [i, diffId] of plan.diffIds.entries()) chainIds.push(i === 0 ? diffId : sha256Digest(`${chainIds[i - 1]} ${diffId}`));
  const existing = await Promise.all(chainIds.map((chainId) => store.existingLayer(chainId)));
  const totalBytes = plan.layers.reduce((sum, layer, i) => sum + (existing[i] ? 0 : layer.size), 0);
  let downloadedBytes = 0;
  let fromCacheBytes = 0;
  let downloadedAt = performance.now();
  const abort = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, abort.signal]) : abort.signal;
  setMaxListeners(0, signal); // every layer's streams, tar and child listen on it
  const made: string[] = [];
  const limit = pLimit(options.concurrency ?? Math.max(4, availableParallelism() * 2));

  const extractOne = async (i: number): Promise<CommitLayer['extracted']> => {
    const layer = plan.layers[i]!;
    const what = `${pinned} layer ${i + 1}/${plan.layers.length} (${layer.digest})`;
    const target = await store.newLayer();
    made.push(target.cacheId);
    const fetchBlob = () =>
      resumableBlob(client, plan.repo, layer.digest, layer.size, {
        signal,
        ...(options.resume && { policy: options.resume }),
        onBytes: (n) => {
          downloadedBytes += n;
          options.onProgress?.({ downloadedBytes, totalBytes });
        },
      });
    const { stream: blob, from } = options.blobCache ? await options.blobCache.open(layer.digest, fetchBlob, signal) : { stream: fetchBlob(), from: 'upstream' as const };
    // Fetched through the cache, the bytes were hashed there (its stream fails on a wrong digest): the size is checked here, not the hash again.
    const verified = new VerifyingStream(layer.digest, layer.size, `blob ${layer.digest} of ${pinned}`, { hash: !(options.blobCache && from === 'upstream') });
    verified.once('end', () => {
      downloadedAt = Math.max(downloadedAt, performance.now());
      if (from === 'cache') fromCacheBytes += layer.size;
    });
    const request = { compression: layerCompression(layer.mediaType), diffDir: target.diffDir, what };
    const extract = options.extractWith !== 'tar' && nativeExtraction(request.compression) ? extractLayerNatively : layer.size >= (options.childProcessMinBytes ?? CHILD_PROCESS_MIN_BYTES) ? extractInChild : extractLayer;
    const extracted = await extract([blob, verified], request, signal);
    if (extracted.diffId !== plan.diffIds[i]) throw new BuildfleetError('integrity', `${what}: uncompressed digest ${extracted.diffId} does not match the config's diff_id ${plan.diffIds[i]}`);
    return { cacheId: target.cacheId, size: extracted.sizeOnDisk, tarSplit: extracted.tarSplit };
  };

  const running = plan.layers.map((_, i) =>
    existing[i]
      ? Promise.resolve(undefined)
      : limit(() => (signal.aborted ? Promise.reject(signal.reason) : extractOne(i))).catch((err: Error) => {
          abort.abort(err); // the queued ones then fail at once
          throw err;
        }),
  );
  try {
    const extracted = await Promise.all(running);
    const layers: CommitLayer[] = plan.layers.map((layer, i) => ({
      chainId: chainIds[i]!,
      ...(i > 0 && { parentChainId: chainIds[i - 1]! }),
      diffId: plan.diffIds[i]!,
      blobDigest: layer.digest,
      ...(extracted[i] && { extracted: extracted[i] }),
    }));
    await store.commit({ repository: plan.repository, pinnedDigest: plan.pinnedDigest, imageId: plan.imageId, config: plan.config, layers });
    return { pinned, imageId: plan.imageId, layers: plan.layers.length, reused: existing.filter(Boolean).length, downloadedBytes, fromCacheBytes, downloadedAt, finishedAt: performance.now() };
  } catch (err) {
    abort.abort(err);
    // Every extraction stops (its tar gone) before what it wrote is removed.
    await Promise.allSettled(running);
    await Promise.allSettled(made.map((cacheId) => store.discard(cacheId)));
    // The first failure, not a sibling's "aborted" that it caused.
    throw options.signal?.aborted ? err : abort.signal.reason;
  }
}

/**
 * Big layers get a child process each only where there are cores for them. Measured on the large
 * preset's 4-layer image (2.5 GB, 150k files) here, 2 cores: in one process 17.0-17.9 s, 26 s of
 * CPU, the main thread 86-90% busy; one child per layer 18.0-21.1 s, 33-38 s of CPU (a second
 * copy of the compressed bytes through a pipe, a Node start-up each). On 2 cores the CPU is the
 * limit and the children only add to it; from 4 cores the main thread (about 15 s of the 26) is
 * the limit, and the children spread it. A layer under 16 MiB never pays a start-up.
 */
export const CHILD_PROCESS_MIN_BYTES = availableParallelism() > 2 ? 16 * 1024 * 1024 : Infinity;

/** Layers the direct path writes: plain tar, gzip and zstd, in Docker's and OCI's names. Foreign, nondistributable and unknown ones go to the runtime. */
const LAYER_TYPES = new Set<string>([MediaType.dockerLayer, MediaType.dockerLayerGzip, MediaType.dockerLayerZstd, MediaType.ociLayer, MediaType.ociLayerGzip, MediaType.ociLayerZstd]);
