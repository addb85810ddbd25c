import Docker from 'dockerode';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { ContainerRuntime } from '../nodepool/runtime/container-runtime.js';
import { DockerRuntime } from '../nodepool/runtime/docker.js';
import { defaultKubeConfig } from './client.js';
import { InClusterAgent } from './in-cluster-agent.js';
import type { InClusterSettings, RuntimeKind } from './in-cluster-settings.js';

/**
 * `buildfleet agent run --in-cluster`: the Kubernetes client from the pod's service account (or
 * KUBECONFIG), the node's runtime client, the agent; runs until SIGTERM or SIGINT (a DaemonSet
 * pod being stopped).
 */

export function runtimeClient(kind: RuntimeKind, socket: string): ContainerRuntime {
  if (kind === 'docker') return new DockerRuntime(new Docker({ socketPath: socket }));
  throw new BuildfleetError('usage', `--runtime ${kind}: not available in this build`);
}

export async function runInClusterAgent(settings: InClusterSettings): Promise<void> {
  const config = defaultKubeConfig();
  const kind = settings.runtime === 'auto' ? 'docker' : settings.runtime;
  const agent = new InClusterAgent({ settings: { ...settings, runtime: kind }, config, runtime: runtimeClient(kind, settings.runtimeSocket) });
  const stop = () => agent.stop();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    await agent.run();
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
}
