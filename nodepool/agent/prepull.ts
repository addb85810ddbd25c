import type Docker from 'dockerode';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { PinnedImage } from '../state/store.js';

/**
 * Pre-pulling: a node takes jobs only once every configured image is in its runtime by
 * digest. Images are pinned (repo@sha256:...) when the pool is applied, so "present" means
 * exactly the bytes the operator asked for, not whatever a tag points at today.
 */

export async function imagePresent(docker: Docker, image: PinnedImage): Promise<boolean> {
  try {
    const info = await docker.getImage(image.pinned).inspect();
    return (info.RepoDigests ?? []).some((repoDigest) => repoDigest.endsWith(`@${image.digest}`));
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

export async function pullImage(docker: Docker, image: PinnedImage, signal?: AbortSignal): Promise<void> {
  const stream = await docker.pull(image.pinned, { abortSignal: signal } as object);
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, output: Array<{ error?: string }>) => {
      const failed = err?.message ?? output.find((event) => event.error)?.error;
      if (failed) reject(new BuildfleetError('network', `pull ${image.pinned}: ${failed}`));
      else resolve();
    });
  });
  if (!(await imagePresent(docker, image))) {
    throw new BuildfleetError('integrity', `pull ${image.pinned}: the runtime does not list ${image.digest} after the pull`);
  }
}
