import { BuildfleetError } from '../../../imagebuilder/errors.js';
import { CRI_API_PROTO } from './api-proto.js';
import { grpc, unaryCall, unixClient, type CallOptions, type ServiceClient } from './grpc-unix.js';

/**
 * A client of the CRI gRPC API (runtime.v1) on a unix socket: containerd's CRI plugin, CRI-O.
 * Every call has a deadline (the probe's timeout, or the signal's): a hung runtime makes a
 * call fail with DEADLINE_EXCEEDED instead of waiting forever, as `crictl --timeout` does.
 */

export type CriVersion = { version: string; runtimeName: string; runtimeVersion: string; runtimeApiVersion: string };
export type CriContainer = { id: string; podSandboxId: string; imageRef: string; state: string; labels: Record<string, string> };
export type CriImage = { id: string; repoTags: string[]; repoDigests: string[]; size: string; pinned: boolean };
export type CriCondition = { type: string; status: boolean; reason: string; message: string };
export type { CallOptions } from './grpc-unix.js';

const DEFAULT_TIMEOUT_MS = 10_000;

export class CriClient {
  private readonly runtime: ServiceClient;
  private readonly image: ServiceClient;

  constructor(readonly socketPath: string) {
    this.runtime = unixClient(CRI_API_PROTO, 'runtime.v1.RuntimeService', socketPath);
    this.image = unixClient(CRI_API_PROTO, 'runtime.v1.ImageService', socketPath);
  }

  close(): void {
    this.runtime.close();
    this.image.close();
  }

  async version(options: CallOptions = {}): Promise<CriVersion> {
    return (await this.call(this.runtime, 'Version', { version: 'v1' }, options)) as CriVersion;
  }

  /** The runtime's own conditions (RuntimeReady, NetworkReady). */
  async status(options: CallOptions = {}): Promise<CriCondition[]> {
    const response = (await this.call(this.runtime, 'Status', {}, options)) as { status?: { conditions?: CriCondition[] } };
    return response.status?.conditions ?? [];
  }

  async listContainers(filter: { state?: 'CONTAINER_RUNNING' } = {}, options: CallOptions = {}): Promise<CriContainer[]> {
    const request = filter.state ? { filter: { state: { state: filter.state } } } : {};
    return ((await this.call(this.runtime, 'ListContainers', request, options)) as { containers: CriContainer[] }).containers;
  }

  async listImages(options: CallOptions = {}): Promise<CriImage[]> {
    return ((await this.call(this.image, 'ListImages', {}, options)) as { images: CriImage[] }).images;
  }

  /** undefined when the runtime does not hold the image. */
  async imageStatus(reference: string, options: CallOptions = {}): Promise<CriImage | undefined> {
    return ((await this.call(this.image, 'ImageStatus', { image: { image: reference } }, options)) as { image?: CriImage | null }).image ?? undefined;
  }

  /** Resolves with the image's ref (its id) once pulled. */
  async pullImage(reference: string, options: CallOptions = {}): Promise<string> {
    return ((await this.call(this.image, 'PullImage', { image: { image: reference } }, { timeoutMs: 30 * 60_000, ...options })) as { imageRef: string }).imageRef;
  }

  private call(client: ServiceClient, method: string, request: object, options: CallOptions): Promise<unknown> {
    return unaryCall(client, method, request, { timeoutMs: DEFAULT_TIMEOUT_MS, ...options }, (err) => criError(method, this.socketPath, err));
  }
}

/** One line: which call, on which socket, and gRPC's status (DEADLINE_EXCEEDED is the hang the probe counts). */
function criError(method: string, socket: string, err: grpc.ServiceError): Error {
  const status = grpc.status[err.code] ?? String(err.code);
  const kind = err.code === grpc.status.DEADLINE_EXCEEDED || err.code === grpc.status.UNAVAILABLE ? 'network' : err.code === grpc.status.NOT_FOUND ? 'not-found' : 'environment';
  const error = new BuildfleetError(kind, `CRI ${method} on ${socket}: ${status}: ${err.details || err.message}`, { cause: err });
  if (err.code === grpc.status.DEADLINE_EXCEEDED) error.name = 'TimeoutError';
  return error;
}
