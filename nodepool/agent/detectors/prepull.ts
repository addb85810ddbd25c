import { setTimeout as sleep } from 'node:timers/promises';
import type { ContainerRuntime } from '../../runtime/container-runtime.js';
import type { PinnedImage } from '../../state/store.js';
import type { DetectorSink } from '../problems.js';
import { PullProgressTracker } from './pull-progress.js';

/** True while the node cannot get its images (the last pull attempt failed); False once all are present. */
export const PREPULL_FAILED = 'PrePullFailed';

/**
 * Pre-pulling: a node takes jobs only once every configured image is in its runtime by
 * digest. Images are pinned (repo@sha256:...) when the pool is applied, so "present" means
 * exactly the bytes the operator asked for, not whatever a tag points at today.
 */
export class PrePullDetector {
  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly sink: DetectorSink,
  ) {}

  /**
   * Each image in turn: verified by digest, or pulled until it is (retrying with backoff up to
   * 30 s); every outcome an `image` observation and an event. Returns when all are present, or
   * early once `signal` fires.
   */
  async ensure(images: readonly PinnedImage[], signal: AbortSignal): Promise<void> {
    for (const [index, image] of images.entries()) {
      for (let attempt = 1; !signal.aborted; attempt++) {
        const started = performance.now();
        try {
          const present = await this.runtime.hasImage(image);
          const progress = new PullProgressTracker();
          if (!present) {
            this.sink.event('pull-started', { image: image.pinned, attempt });
            await this.runtime.pullImage(image, { signal, onProgress: (report) => progress.note(report) });
          }
          const seconds = (performance.now() - started) / 1000;
          const downloadedAt = progress.downloadedAt;
          this.sink.observe({
            kind: 'image',
            index,
            image,
            present: true,
            seconds,
            // An image already there (a preloaded disk) downloaded nothing.
            ...(present && { downloadSeconds: 0, downloadedBytes: 0 }),
            ...(downloadedAt !== undefined && { downloadSeconds: (downloadedAt - started) / 1000, downloadedBytes: progress.downloadedBytes }),
          });
          this.sink.event(present ? 'image-verified' : 'pull-done', { image: image.pinned, ms: Math.round(seconds * 1000) });
          break;
        } catch (err) {
          if (signal.aborted) return;
          const error = (err as Error).message.split('\n')[0]!;
          this.sink.observe({ kind: 'image', index, image, present: false, error });
          this.sink.problem({ type: PREPULL_FAILED, present: true, reason: 'PullFailed', message: `${image.pinned}: ${error} (attempt ${attempt}; retrying)` });
          this.sink.event('pull-failed', { image: image.pinned, attempt, error });
          await sleep(Math.min(30_000, 500 * 2 ** attempt), undefined, { signal }).catch(() => {});
        }
      }
    }
    if (!signal.aborted) this.sink.problem({ type: PREPULL_FAILED, present: false, reason: 'ImagesPresent', message: `all ${images.length} image(s) present by digest` });
  }
}
