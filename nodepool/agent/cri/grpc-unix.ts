import * as grpc from '@grpc/grpc-js';
import { fromJSON } from '@grpc/proto-loader';
import protobuf from 'protobufjs';

/**
 * gRPC clients on a unix socket from a .proto kept as a string (api-proto.ts), and unary calls
 * that always carry a deadline and honour an AbortSignal: a hung server makes a call fail with
 * DEADLINE_EXCEEDED (or the signal's reason) instead of waiting forever.
 */

type Unary = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, response?: unknown) => void) => grpc.ClientUnaryCall;
export type ServiceClient = grpc.Client & Record<string, Unary>;
type ServiceConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: object) => ServiceClient;

const packages = new Map<string, grpc.GrpcObject>();

/** A service's client constructor (which carries its `service` definition, for a server) by full name, e.g. `runtime.v1.RuntimeService`. */
export function serviceConstructor(protoText: string, service: string): ServiceConstructor & { service: grpc.ServiceDefinition } {
  let loaded = packages.get(protoText);
  if (!loaded) {
    const root = protobuf.parse(protoText, { keepCase: false }).root;
    loaded = grpc.loadPackageDefinition(fromJSON(root.toJSON(), { longs: String, enums: String, defaults: true }));
    packages.set(protoText, loaded);
  }
  return service.split('.').reduce<unknown>((at, part) => (at as Record<string, unknown>)[part], loaded) as ServiceConstructor & { service: grpc.ServiceDefinition };
}

export function unixClient(protoText: string, service: string, socketPath: string): ServiceClient {
  const Service = serviceConstructor(protoText, service);
  // Reconnect within a second: a restarted runtime should be seen at the next probe.
  return new Service(`unix://${socketPath}`, grpc.credentials.createInsecure(), { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 });
}

export type CallOptions = { timeoutMs?: number; signal?: AbortSignal; metadata?: Record<string, string> };

export function unaryCall(client: ServiceClient, method: string, request: object, options: CallOptions, toError: (err: grpc.ServiceError) => Error): Promise<unknown> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
  return new Promise((resolve, reject) => {
    const onAbort = () => call.cancel();
    const call = client[method]!.call(client, request, metadata, { deadline: Date.now() + (options.timeoutMs ?? 10_000) }, (err, response) => {
      signal?.removeEventListener('abort', onAbort);
      if (signal?.aborted) reject(signal.reason);
      else if (err) reject(toError(err));
      else resolve(response);
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export { grpc };
