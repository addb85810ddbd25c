import type Modem from 'docker-modem';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { ContainerRuntime, DigestImage, PullProgress, RuntimeContainer } from './container-runtime.js';

/**
 * The container runtime through the Docker Engine API, on whatever socket the modem was given.
 * It speaks through docker-modem, dockerode's own transport, with the same requests dockerode
 * makes: dockerode's entry loads gRPC and protobuf for BuildKit sessions at once, about 0.3 s of
 * CPU that every node's agent paid at start-up for three calls that need none of it.
 */
export class DockerRuntime implements ContainerRuntime {
  constructor(readonly modem: Modem) {}

  async listContainers(options: { signal?: AbortSignal } = {}): Promise<RuntimeContainer[]> {
    const list = await this.dial<Array<{ Id: string; Labels?: Record<string, string> }>>({
      path: '/containers/json?',
      method: 'GET',
      options: {},
      ...(options.signal && { abortSignal: options.signal }),
      statusCodes: { 200: true, 400: 'bad parameter', 500: 'server error' },
    });
    return list.map((c) => ({ id: c.Id, labels: c.Labels ?? {} }));
  }

  async hasImage(image: DigestImage): Promise<boolean> {
    try {
      const info = await this.dial<{ RepoDigests?: string[] }>({
        path: `/images/${image.pinned}/json`,
        method: 'GET',
        options: {},
        statusCodes: { 200: true, 404: 'no such image', 500: 'server error' },
      });
      return (info.RepoDigests ?? []).some((repoDigest) => repoDigest.endsWith(`@${image.digest}`));
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false;
      throw err;
    }
  }

  async pullImage(image: DigestImage, options: { signal?: AbortSignal; onProgress?: (progress: PullProgress) => void } = {}): Promise<void> {
    const at = image.pinned.lastIndexOf('@');
    // The Engine API takes a digest where a tag goes: fromImage=repo, tag=sha256:...
    const stream = await this.dial<NodeJS.ReadableStream>({
      path: '/images/create?',
      method: 'POST',
      options: { fromImage: image.pinned.slice(0, at), tag: image.pinned.slice(at + 1) },
      isStream: true,
      ...(options.signal && { abortSignal: options.signal }),
      statusCodes: { 200: true, 500: 'server error' },
    });
    const onProgress = options.onProgress;
    await new Promise<void>((resolve, reject) => {
      const done = (err: Error | null, output: Array<{ error?: string }>) => {
        const failed = err?.message ?? output.find((event) => event.error)?.error;
        if (failed) reject(new BuildfleetError('network', `pull ${image.pinned}: ${failed}`));
        else resolve();
      };
      const progress = (event: { status?: string; id?: string; progressDetail?: { current?: number; total?: number } }) =>
        onProgress?.({ status: event.status ?? '', ...(event.id && { layer: event.id }), ...event.progressDetail });
      this.modem.followProgress(stream, done, onProgress && progress);
    });
    if (!(await this.hasImage(image))) {
      throw new BuildfleetError('integrity', `pull ${image.pinned}: the runtime does not list ${image.digest} after the pull`);
    }
  }

  private dial<T>(options: Modem.DialOptions & { abortSignal?: AbortSignal }): Promise<T> {
    return new Promise((resolve, reject) => this.modem.dial(options, (err, data) => (err ? reject(err) : resolve(data as T))));
  }
}
