/**
 * The container runtime as the node agent sees it: what its probe asks (list containers, under
 * a deadline) and what its pre-pull needs (is an image here by digest; pull one). Docker
 * (`docker.ts`) implements it today; a CRI runtime (containerd's or CRI-O's image and runtime
 * services) is the next file beside it.
 */

export type RuntimeContainer = { id: string; labels: Record<string, string> };

/** An image pinned by digest (`repo@sha256:...`): "present" means exactly these bytes, whatever a tag says today. */
export type DigestImage = { pinned: string; digest: string };

/** One progress report of a pull, as the runtime gives it (per layer, when it says which). */
export type PullProgress = { status: string; layer?: string; current?: number; total?: number };

export interface ContainerRuntime {
  /** Lists the running containers: the probe's question. Rejects with the signal's reason (a TimeoutError for AbortSignal.timeout) when it fires first. */
  listContainers(options?: { signal?: AbortSignal }): Promise<RuntimeContainer[]>;
  /** Whether the runtime holds the image by its digest. */
  hasImage(image: DigestImage): Promise<boolean>;
  /** Pulls the image; resolves only once the runtime holds it by digest. */
  pullImage(image: DigestImage, options?: { signal?: AbortSignal; onProgress?: (progress: PullProgress) => void }): Promise<void>;
}
