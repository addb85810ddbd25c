import Modem from 'docker-modem';
import type { ContainerRuntime } from '../nodepool/runtime/container-runtime.js';
import { DockerRuntime } from '../nodepool/runtime/docker.js';
import { CriClient } from '../nodepool/agent/cri/client.js';
import { CriRuntime, detectRuntimeKind } from '../nodepool/agent/cri/cri-runtime.js';
import { ContainerdImages } from '../nodepool/agent/cri/pin.js';
import { defaultKubeConfig } from './client.js';
import { InClusterAgent } from './in-cluster-agent.js';
import type { InClusterSettings, RuntimeKind } from './in-cluster-settings.js';

/**
 * `buildfleet agent run --in-cluster`: the Kubernetes client from the pod's service account (or
 * KUBECONFIG), the node's runtime client (CRI for containerd, which also pins the build image;
 * or Docker), the agent; runs until SIGTERM or SIGINT (a DaemonSet
 * pod being stopped).
 */

export type InClusterRuntime = {
  kind: RuntimeKind;
  runtime: ContainerRuntime;
  /** containerd's image pinning, for a CRI runtime. */
  pinBuildImage?: (digest: string) => Promise<string[]>;
  close(): void;
};

/** The runtime client the settings ask for (`auto`: what answers on the socket). */
export async function inClusterRuntime(settings: Pick<InClusterSettings, 'runtime' | 'runtimeSocket'>): Promise<InClusterRuntime> {
  const socket = settings.runtimeSocket;
  const kind = settings.runtime === 'auto' ? await detectRuntimeKind(socket) : settings.runtime;
  if (kind === 'docker') return { kind, runtime: new DockerRuntime(new Modem({ socketPath: socket })), close: () => {} };
  const cri = new CriClient(socket);
  const images = new ContainerdImages(socket);
  return {
    kind,
    runtime: new CriRuntime(cri),
    pinBuildImage: (digest) => images.pin(digest),
    close: () => {
      cri.close();
      images.close();
    },
  };
}

export async function runInClusterAgent(settings: InClusterSettings): Promise<void> {
  const config = defaultKubeConfig();
  const runtime = await inClusterRuntime(settings);
  const agent = new InClusterAgent({
    settings: { ...settings, runtime: runtime.kind },
    config,
    runtime: runtime.runtime,
    ...(runtime.pinBuildImage && { pinBuildImage: runtime.pinBuildImage }),
  });
  const stop = () => agent.stop();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    await agent.run();
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    runtime.close();
  }
}
