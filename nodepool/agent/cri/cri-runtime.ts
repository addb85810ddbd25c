import Docker from 'dockerode';
import { BuildfleetError } from '../../../imagebuilder/errors.js';
import type { ContainerRuntime, DigestImage, RuntimeContainer } from '../../runtime/container-runtime.js';
import { CriClient } from './client.js';

/**
 * The container runtime through the CRI API, for nodes that run containerd (GKE) or CRI-O
 * without Docker: the probe lists the running containers (what `crictl ps` asks) under the
 * probe's deadline, the pre-pull asks ImageStatus by digest and pulls through PullImage, as
 * kubelet does.
 */
export class CriRuntime implements ContainerRuntime {
  constructor(readonly client: CriClient) {}

  async listContainers(options: { signal?: AbortSignal } = {}): Promise<RuntimeContainer[]> {
    const containers = await this.client.listContainers({ state: 'CONTAINER_RUNNING' }, options.signal ? { signal: options.signal } : {});
    return containers.map((c) => ({ id: c.id, labels: c.labels }));
  }

  async hasImage(image: DigestImage): Promise<boolean> {
    const found = await this.client.imageStatus(image.pinned);
    return !!found && found.repoDigests.some((repoDigest) => repoDigest.endsWith(`@${image.digest}`));
  }

  async pullImage(image: DigestImage, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.client.pullImage(image.pinned, options.signal ? { signal: options.signal } : {});
    if (!(await this.hasImage(image))) throw new BuildfleetError('network', `pull ${image.pinned}: the runtime does not hold ${image.digest} after the pull`);
  }
}

/**
 * `--runtime auto`: what answers on the socket. CRI first (a gRPC Version call), then the Docker
 * API (a ping); each within timeoutMs. Neither: one line saying so.
 */
export async function detectRuntimeKind(socketPath: string, timeoutMs = 3000): Promise<'cri' | 'docker'> {
  const cri = new CriClient(socketPath);
  try {
    await cri.version({ timeoutMs });
    return 'cri';
  } catch {
    // not a CRI server: try Docker
  } finally {
    cri.close();
  }
  try {
    await new Docker({ socketPath, timeout: timeoutMs }).ping();
    return 'docker';
  } catch (err) {
    throw new BuildfleetError('environment', `nothing answers on ${socketPath} as a CRI runtime (gRPC runtime.v1) or a Docker Engine: ${(err as Error).message.split('\n')[0]}; give --runtime-socket, or --runtime cri|docker`);
  }
}
