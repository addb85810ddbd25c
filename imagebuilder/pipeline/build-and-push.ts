import { Readable } from 'node:stream';
import type Dockerode from 'dockerode';
import { buildOnEngine, type EngineBuildRequest } from '../build/engine.js';
import { prepareContext } from '../build/context.js';
import { buildTarget } from '../build/options.js';
import { copyImage } from '../copy/copy.js';
import { squashImage, type SquashOptions, type SquashProgress, type SquashReport } from '../squash/index.js';
import { formatReference } from '../oci/reference.js';
import type { Platform } from '../oci/schemas.js';
import { openDestination, openSource, resolveImage, type ImageDestination, type ProgressListener, type TransportOptions } from '../transports/index.js';
import { registryClientFor } from '../transports/registry.js';
import { writeFileAtomically } from '../transports/files.js';

/**
 * `image build`: the engine builds, then the built image goes through the same squash and copy
 * as `image squash` / `image copy`, read once from the engine (one `docker save`, no archive in
 * between) and written straight to the registry (a squash streams its output there while it
 * compresses). A push is checked before the build (registry reachable, credentials taken), so a
 * CI job with a typo in its registry fails in seconds, not after the build; and since the
 * manifest goes last, a failure anywhere leaves no tag at the registry.
 */

export type ImageBuildOptions = Omit<EngineBuildRequest, 'tag'> & {
  context: string;
  /** Dockerfile, relative to the current directory (`docker build -f`); default CONTEXT/Dockerfile. */
  file?: string;
  /** HOST/REPO:TAG (or docker-daemon:NAME:TAG without push). */
  tag: string;
  /** Squash after the build (options as `image squash` takes them). */
  squash?: SquashOptions;
  push?: boolean;
  docker: Dockerode;
  transports?: TransportOptions;
  platform?: Platform;
  /** The build's own text (step lines, RUN output), as it comes. */
  log?: (text: string) => void;
  onProgress?: (event: ImageBuildProgress) => void;
  signal?: AbortSignal;
};

export type ImageBuildProgress = { phase: 'check' | 'build' | 'export' } | SquashProgress | { phase: 'copy'; event: Parameters<ProgressListener>[0] };

export type ImageBuildReport = {
  tag: string;
  /** The image the engine built, layered. */
  source: { engineTag: string; imageId: string; manifestDigest?: string; layers: number; bytes?: number; steps: number; contextBytes: number };
  /** What --squash / --push made of it; absent when the build alone was asked. */
  result?: { reference: string; manifestDigest: string; layers: number; compressedBytes: number; uncompressedBytes?: number; squashed: boolean; pushed: boolean };
  squash?: Pick<SquashReport, 'shadowedBytes' | 'files' | 'entriesBefore' | 'compression'>;
  /** build: the engine's build; export: `docker save` read; squash: index, merge and write; push: what is left of the upload (the manifest last). */
  phasesMs: { check: number; build: number; export: number; squash: number; push: number; total: number };
};

export async function buildImage(options: ImageBuildOptions): Promise<ImageBuildReport> {
  const started = performance.now();
  const progress = options.onProgress ?? (() => {});
  const target = buildTarget(options.tag, options.push === true);
  const transports: TransportOptions = { ...options.transports, docker: options.docker };
  const context = await prepareContext(options.context, options.file);
  const phasesMs = { check: 0, build: 0, export: 0, squash: 0, push: 0, total: 0 };
  const timed = async <T>(phase: keyof typeof phasesMs, run: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await run();
    } finally {
      phasesMs[phase] += Math.round(performance.now() - t0);
    }
  };

  if (options.push && target.registry) {
    progress({ phase: 'check' });
    await timed('check', () => registryClientFor(target.registry!.registry, transports.registry ?? {}).ping());
  }

  progress({ phase: 'build' });
  const built = await timed('build', () =>
    buildOnEngine(options.docker, context, {
      tag: target.engineTag,
      ...pick(options, ['buildArgs', 'labels', 'target', 'network', 'noCache', 'pull']),
    }, { ...(options.log && { log: options.log }), ...(options.signal && { signal: options.signal }) }),
  );
  // The phases are added at the end, so that they read last in the JSON.
  const report: Omit<ImageBuildReport, 'phasesMs'> = {
    tag: options.tag,
    source: { engineTag: target.engineTag, imageId: built.imageId, layers: 0, steps: built.steps, contextBytes: built.contextBytes },
  };
  if (!options.squash && !options.push) {
    const inspected = (await options.docker.getImage(built.imageId).inspect()) as { RootFS?: { Layers?: string[] }; Size?: number };
    report.source.layers = inspected.RootFS?.Layers?.length ?? 0;
    if (inspected.Size !== undefined) report.source.bytes = inspected.Size;
    phasesMs.total = Math.round(performance.now() - started);
    return { ...report, phasesMs };
  }

  // One `docker save`, spooled once; squash and copy both read their layers from that spool.
  progress({ phase: 'export' });
  const source = await timed('export', () => openSource(`docker-daemon:${built.imageId}`, transports));
  try {
    const image = await resolveImage(source, options.platform);
    Object.assign(report.source, {
      manifestDigest: image.manifestDigest,
      layers: image.manifest.layers.length,
      bytes: image.manifest.layers.reduce((sum, layer) => sum + layer.size, 0),
    });
    const destinationRef = options.push ? target.registry! : target.daemon;
    const destination: ImageDestination = await openDestination(destinationRef, transports);
    if (options.squash) {
      const squashed = await squashImage(source, destination, {
        ...options.squash,
        // The engine inflates what it loads: compressing for it would be work thrown away.
        ...(options.push ? {} : { compression: 'none' as const, level: undefined }),
        ...(options.platform && { platform: options.platform }),
        ...(options.squash.tmpDir === undefined && transports.tmpDir !== undefined && { tmpDir: transports.tmpDir }),
        onProgress: (event) => {
          options.squash?.onProgress?.(event);
          progress(event);
        },
      });
      phasesMs.push += squashed.phasesMs.push;
      phasesMs.squash += squashed.phasesMs.total - squashed.phasesMs.push;
      report.result = {
        reference: formatReference(destinationRef),
        manifestDigest: squashed.manifestDigest,
        layers: squashed.layers.after,
        compressedBytes: squashed.bytes.compressedAfter,
        uncompressedBytes: squashed.bytes.uncompressedAfter,
        squashed: true,
        pushed: options.push === true,
      };
      report.squash = { shadowedBytes: squashed.shadowedBytes, files: squashed.files, entriesBefore: squashed.entriesBefore, compression: squashed.compression };
    } else {
      const copied = await timed('push', () =>
        copyImage(source, destination, { ...(options.platform && { platform: options.platform }), onProgress: (event) => progress({ phase: 'copy', event }) }),
      );
      report.result = {
        reference: formatReference(destinationRef),
        manifestDigest: copied.manifestDigest,
        layers: copied.layers.length,
        compressedBytes: copied.layers.reduce((sum, layer) => sum + layer.size, 0),
        squashed: false,
        pushed: true,
      };
    }
  } finally {
    await source.close();
  }
  phasesMs.total = Math.round(performance.now() - started);
  return { ...report, phasesMs };
}

/** The report as pretty JSON, written to a temp file beside PATH and renamed: a CI never archives half a report. */
export async function writeBuildReport(path: string, report: ImageBuildReport): Promise<void> {
  await writeFileAtomically(Readable.from([Buffer.from(JSON.stringify(report, null, 2) + '\n')]), path);
}

function pick<T extends object, K extends keyof T>(value: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const picked: Partial<Pick<T, K>> = {};
  for (const key of keys) if (value[key] !== undefined) picked[key] = value[key];
  return picked;
}
