import type { RuntimeImageStore } from '../../runtime/host.js';
import type { NodeStatus, PinnedImage } from '../../state/store.js';
import { installImage } from '../../prepull/install.js';
import { UnsupportedLayer } from '../../prepull/layer-walk.js';
import { BuildfleetError } from '../../../imagebuilder/errors.js';
import type { ResumePolicy } from '../../prepull/blob-fetch.js';
import type { SharedBlobCache } from '../../prepull/blob-cache.js';
import type { DetectorSink } from '../problems.js';
import { PREPULL_FAILED } from './prepull.js';


/**
 * The direct pre-pull (prepull.mode direct): before the runtime starts, every image is written
 * into its store by buildfleet (`nodepool/prepull`). What it cannot do exactly as the runtime
 * would (UnsupportedLayer) or cannot do at all (the registry gone after retries, a corrupt blob)
 * is left to the runtime's own pull that follows, which verifies every image by digest anyway;
 * a failure raises PrePullFailed with the reason.
 */
export class DirectPrePull {
  constructor(
    private readonly sink: DetectorSink,
    private readonly settings: { insecureRegistries: string[]; resume?: ResumePolicy; blobCache?: SharedBlobCache },
  ) {}

  /** The install's marks for the node's status when every image went in; undefined when the runtime's pull must do (some of) it. */
  async install(images: readonly PinnedImage[], store: RuntimeImageStore, signal: AbortSignal): Promise<NodeStatus['install']> {
    const started = Date.now();
    const wall = (perf: number) => new Date(started + (perf - startedPerf)).toISOString();
    const startedPerf = performance.now();
    let downloadedBytes = 0;
    let downloadedAt = startedPerf;
    let whole = true;
    for (const image of images) {
      this.sink.event('direct-pull-started', { image: image.pinned });
      try {
        const result = await installImage(image.pinned, {
          dataRoot: store.dataRoot,
          registry: { insecure: this.settings.insecureRegistries },
          signal,
          ...(this.settings.resume && { resume: this.settings.resume }),
          ...(this.settings.blobCache && { blobCache: this.settings.blobCache }),
        });
        downloadedBytes += result.downloadedBytes;
        downloadedAt = Math.max(downloadedAt, result.downloadedAt);
        this.sink.event('direct-pull-done', { image: image.pinned, ms: Math.round(result.finishedAt - startedPerf), layers: result.layers, reused: result.reused, bytes: result.downloadedBytes, fromCache: result.fromCacheBytes });
      } catch (err) {
        if (signal.aborted) return undefined;
        const message = (err as Error).message.split('\n')[0]!;
        if (err instanceof UnsupportedLayer) {
          this.sink.event('direct-pull-skipped', { image: image.pinned, reason: message });
        } else {
          this.sink.event('direct-pull-failed', { image: image.pinned, error: message });
          this.sink.problem({ type: PREPULL_FAILED, present: true, reason: 'DirectPullFailed', message: `${image.pinned}: ${message}; the runtime's pull tries next` });
          // A registry out of reach is out of reach for the next images too: their retries would only hold the runtime back.
          if (err instanceof BuildfleetError && err.kind === 'network') return undefined;
        }
        // The other images still go in directly; the runtime's pull does this one.
        whole = false;
      }
    }
    if (!whole) return undefined;
    return { startedAt: new Date(started).toISOString(), downloadedAt: wall(downloadedAt), finishedAt: wall(performance.now()), downloadedBytes };
  }
}
