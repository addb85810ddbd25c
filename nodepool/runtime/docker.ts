import type Docker from 'dockerode';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { ContainerRuntime, DigestImage, PullProgress, RuntimeContainer } from './container-runtime.js';

/** The container runtime through the Docker Engine API (dockerode), on whatever socket the client was given. */
export class DockerRuntime implements ContainerRuntime {
  constructor(readonly docker: Docker) {}

  async listContainers(options: { signal?: AbortSignal } = {}): Promise<RuntimeContainer[]> {
    const list = await this.docker.listContainers({ abortSignal: options.signal } as Docker.ContainerListOptions);
    return list.map((c) => ({ id: c.Id, labels: c.Labels ?? {} }));
  }

  async hasImage(image: DigestImage): Promise<boolean> {
    try {
      const info = await this.docker.getImage(image.pinned).inspect();
      return (info.RepoDigests ?? []).some((repoDigest) => repoDigest.endsWith(`@${image.digest}`));
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false;
      throw err;
    }
  }

  async pullImage(image: DigestImage, options: { signal?: AbortSignal; onProgress?: (progress: PullProgress) => void } = {}): Promise<void> {
    const stream = await this.docker.pull(image.pinned, { abortSignal: options.signal } as object);
    const onProgress = options.onProgress;
    await new Promise<void>((resolve, reject) => {
      const done = (err: Error | null, output: Array<{ error?: string }>) => {
        const failed = err?.message ?? output.find((event) => event.error)?.error;
        if (failed) reject(new BuildfleetError('network', `pull ${image.pinned}: ${failed}`));
        else resolve();
      };
      const progress = (event: { status?: string; id?: string; progressDetail?: { current?: number; total?: number } }) =>
        onProgress?.({ status: event.status ?? '', ...(event.id && { layer: event.id }), ...event.progressDetail });
      this.docker.modem.followProgress(stream, done, onProgress && progress);
    });
    if (!(await this.hasImage(image))) {
      throw new BuildfleetError('integrity', `pull ${image.pinned}: the runtime does not list ${image.digest} after the pull`);
    }
  }
}
