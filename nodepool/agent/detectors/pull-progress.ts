import type { PullProgress } from '../../runtime/container-runtime.js';

/**
 * Follows a runtime's pull progress to tell when the last layer finished downloading: what
 * splits a pull into "download" and "decompress + extract" (the runtime extracts layers one
 * after another, some while later ones still download). Pure: fed the progress reports, asked
 * for the moment. Docker's statuses per layer: Pulling fs layer, Waiting, Downloading, Verifying
 * Checksum, Download complete, Extracting, Pull complete, or Already exists.
 */
const DOWNLOADED = new Set(['Download complete', 'Extracting', 'Pull complete', 'Already exists']);
const LAYER_STATUSES = new Set(['Pulling fs layer', 'Waiting', 'Downloading', 'Verifying Checksum', ...DOWNLOADED]);

export class PullProgressTracker {
  private readonly layers = new Map<string, { downloaded: boolean; total?: number }>();
  private lastDownloadAt: number | undefined;

  constructor(private readonly now: () => number = () => performance.now()) {}

  note(progress: PullProgress): void {
    if (!progress.layer || !LAYER_STATUSES.has(progress.status)) return;
    const layer = this.layers.get(progress.layer) ?? { downloaded: false };
    if (progress.status === 'Downloading' && progress.total) layer.total = progress.total;
    if (DOWNLOADED.has(progress.status) && !layer.downloaded) {
      layer.downloaded = true;
      this.lastDownloadAt = this.now();
    }
    this.layers.set(progress.layer, layer);
  }

  /** When every layer the runtime named had downloaded (undefined while one has not, or none was named). */
  get downloadedAt(): number | undefined {
    if (this.layers.size === 0 || [...this.layers.values()].some((layer) => !layer.downloaded)) return undefined;
    return this.lastDownloadAt;
  }

  /** Compressed bytes the runtime said it downloaded (layers it already had count 0). */
  get downloadedBytes(): number {
    return [...this.layers.values()].reduce((sum, layer) => sum + (layer.total ?? 0), 0);
  }
}
