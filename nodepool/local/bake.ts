import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DockerEngine } from '../daemons/docker-engine.js';
import { DockerRuntime } from '../runtime/docker.js';
import type { PinnedImage } from '../state/store.js';

/**
 * Fills a fresh runtime disk (mounted at mountPoint) with the images, by digest: a throwaway
 * Docker Engine with its data-root where a node's dockerd will have it (`docker/` on the runtime
 * disk), the same engine a node runs, pulls them and stops. The engine id goes: a clone must not
 * share it, so each node's dockerd makes its own.
 */
export async function bakeImages(mountPoint: string, scratch: string, images: readonly PinnedImage[], insecureRegistries: string[]): Promise<void> {
  const dataRoot = join(mountPoint, 'docker');
  const engine = await DockerEngine.start({ root: scratch, dataRoot, insecureRegistries });
  try {
    const runtime = new DockerRuntime(engine.docker.modem);
    for (const image of images) await runtime.pullImage(image);
  } finally {
    await engine.stop();
  }
  await rm(join(dataRoot, 'engine-id'), { force: true });
}
