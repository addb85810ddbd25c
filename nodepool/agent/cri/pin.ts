import { BuildfleetError } from '../../../imagebuilder/errors.js';
import { grpc, unaryCall, unixClient } from './grpc-unix.js';

/**
 * Pinning the pre-pulled build image so kubelet's image GC leaves it: containerd's CRI plugin
 * (1.7 and later) reports an image `pinned` when its record carries the label
 * `io.cri-containerd.pinned=pinned`, and kubelet never collects a pinned image. The label is set
 * through containerd's own Images API (containerd.services.images.v1, in the `k8s.io`
 * namespace the CRI plugin keeps its images in), on every name of the image (repo@digest, tag,
 * id: the CRI plugin merges them into one image), with an update mask naming only that label.
 *
 * The proto below is the subset of containerd's api/services/images/v1/images.proto we call,
 * written by hand with upstream's names and field numbers. FieldMask is declared here with
 * google.protobuf.FieldMask's one field (paths = 1): the wire format carries no type names.
 */
export const CONTAINERD_IMAGES_PROTO = `
syntax = "proto3";
package containerd.services.images.v1;

service Images {
  rpc List(ListImagesRequest) returns (ListImagesResponse);
  rpc Update(UpdateImageRequest) returns (UpdateImageResponse);
}

message Descriptor {
  string media_type = 1;
  string digest = 2;
  int64 size = 3;
}
message Image {
  string name = 1;
  map<string, string> labels = 2;
  Descriptor target = 3;
}
message FieldMask { repeated string paths = 1; }
message ListImagesRequest { repeated string filters = 1; }
message ListImagesResponse { repeated Image images = 1; }
message UpdateImageRequest {
  Image image = 1;
  FieldMask update_mask = 2;
}
message UpdateImageResponse { Image image = 1; }
`;

export const PINNED_LABEL = 'io.cri-containerd.pinned';
export const PINNED_VALUE = 'pinned';
/** Where containerd's CRI plugin keeps Kubernetes' images. */
export const CRI_NAMESPACE = 'k8s.io';

export type ContainerdImage = { name: string; labels: Record<string, string>; target: { mediaType: string; digest: string; size: string } };

export class ContainerdImages {
  private readonly client;

  constructor(readonly socketPath: string, private readonly namespace = CRI_NAMESPACE) {
    this.client = unixClient(CONTAINERD_IMAGES_PROTO, 'containerd.services.images.v1.Images', socketPath);
  }

  close(): void {
    this.client.close();
  }

  /** Image records matching any of containerd's filters (all without one). */
  async list(filters: string[] = [], timeoutMs = 10_000): Promise<ContainerdImage[]> {
    return ((await this.call('List', { filters }, timeoutMs)) as { images: ContainerdImage[] }).images;
  }

  /** The image records whose target is this manifest digest (every name of one image). */
  byDigest(digest: string, timeoutMs = 10_000): Promise<ContainerdImage[]> {
    return this.list([`target.digest==${digest}`], timeoutMs);
  }

  /** Labels every name of the image with digest `digest` pinned; returns the names. Fails (not-found) when containerd has none. */
  async pin(digest: string, timeoutMs = 10_000): Promise<string[]> {
    const images = await this.byDigest(digest, timeoutMs);
    if (images.length === 0) throw new BuildfleetError('not-found', `pin ${digest}: containerd on ${this.socketPath} holds no image with that digest in namespace ${this.namespace}`);
    for (const image of images) {
      if (image.labels[PINNED_LABEL] === PINNED_VALUE) continue;
      await this.call('Update', { image: { name: image.name, labels: { [PINNED_LABEL]: PINNED_VALUE } }, updateMask: { paths: [`labels.${PINNED_LABEL}`] } }, timeoutMs);
    }
    return images.map((image) => image.name);
  }

  private call(method: string, request: object, timeoutMs: number): Promise<unknown> {
    return unaryCall(this.client, method, request, { timeoutMs, metadata: { 'containerd-namespace': this.namespace } }, (err) => {
      const status = grpc.status[err.code] ?? String(err.code);
      return new BuildfleetError(err.code === grpc.status.NOT_FOUND ? 'not-found' : 'environment', `containerd Images.${method} on ${this.socketPath}: ${status}: ${err.details || err.message}`, { cause: err });
    });
  }
}
