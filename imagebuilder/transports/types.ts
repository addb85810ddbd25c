import type { Readable } from 'node:stream';
import type { Compression, ManifestFormat } from '../oci/media-types.js';
import type { Descriptor, ImageConfig, Index, Manifest, Platform } from '../oci/schemas.js';
import type { ImageReference } from '../oci/reference.js';

/**
 * The seam between transports and the image pipeline. An image is a config plus layers;
 * a source presents one platform's manifest and opens blobs; a destination stores blobs,
 * then a manifest that names them, then commits. Nothing is visible at the destination
 * before commit() (or, for a registry, before the manifest PUT, which comes last).
 */
export interface ResolvedImage {
  manifest: Manifest;
  /** The exact manifest bytes: their sha256 is the manifest digest. */
  manifestBytes: Buffer;
  manifestDigest: string;
  manifestMediaType: string;
  config: ImageConfig;
  configBytes: Buffer;
  /** The index or manifest list the manifest was selected from, when there was one. */
  index?: { index: Index; bytes: Buffer; digest: string; mediaType: string };
}

export type ResolveOptions = {
  /** Which entry of a multi-arch index to take; default: this machine's platform. */
  platform?: Platform;
};

export interface ImageSource {
  readonly reference: ImageReference;
  resolve(options?: ResolveOptions): Promise<ResolvedImage>;
  /**
   * A fresh stream of the blob's bytes, verified against descriptor.digest and size: the stream
   * errors instead of ending when they differ. Callable again (retries reopen).
   */
  openBlob(descriptor: Descriptor, options?: OpenBlobOptions): Promise<Readable>;
  /** Frees temp files and connections. */
  close(): Promise<void>;
}

export type OpenBlobOptions = {
  /**
   * false: check only the size, not the digest. For a caller that passes the bytes unchanged to
   * a destination with the digest: every ImageDestination rejects content that does not match
   * it, so hashing here too would check the same bytes twice.
   */
  verify?: boolean;
};

export type BlobToStore = {
  mediaType: string;
  /** Known when the bytes are passed through unchanged; absent when they are (re)compressed on the way. */
  digest?: string;
  size?: number;
};

export interface DestinationPreferences {
  /** Manifest format the destination writes; 'keep' takes the source's. */
  manifestFormat: ManifestFormat | 'keep';
  /** Layer compression the destination stores; 'keep' stores layers as the source has them. */
  layerCompression: Compression | 'keep';
}

export interface ImageDestination {
  readonly reference: ImageReference;
  readonly preferences: DestinationPreferences;
  /**
   * True when the destination already has the blob, or made it available without an upload
   * (a registry's cross-repository mount from `mountFrom`, same registry only).
   */
  hasBlob(descriptor: Descriptor, mountFrom?: ImageReference): Promise<boolean>;
  /**
   * Stores a blob. `open` may be called more than once (a retry reopens the source). Returns the
   * stored descriptor, with the digest and size computed while storing. When `blob.digest` is
   * given, content that does not match it is rejected and not kept.
   */
  putBlob(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor>;
  /**
   * Optional (registries): starts storing a blob while its producer still writes it, for bytes
   * whose digest is known only at their end. `bytes` is read once, as produced; the blob is
   * committed only once `stored` gives the digest and size of everything written, under that
   * digest (the destination checks it). A rejection of `stored` commits nothing. No retry: on
   * any failure the caller puts the blob again, with putBlob, from its complete copy.
   * `chunkBytes`: bytes per request where the destination sends the blob in pieces; it holds up
   * to two of them (one sent, one gathered), so a caller with several uploads at once can bound
   * their memory together.
   */
  putBlobWhileWritten?(bytes: Readable, stored: Promise<{ digest: string; size: number }>, blob: { mediaType: string; chunkBytes?: number }): Promise<Descriptor>;
  /** Stores the manifest that names only blobs already put. Returns its digest. */
  putManifest(manifestBytes: Buffer, mediaType: string): Promise<string>;
  /** Makes the image visible (rename of an archive, index.json update, docker load). */
  commit(): Promise<void>;
  /** Removes whatever this destination wrote that is not committed. Safe to call twice. */
  abort(): Promise<void>;
}

/** Byte progress of a long operation, for a progress bar or a log. */
export type ProgressEvent =
  | { kind: 'blob-start'; digest: string; size?: number; what: 'config' | 'layer' }
  | { kind: 'blob-bytes'; digest: string; bytes: number }
  | { kind: 'blob-done'; digest: string; skipped: boolean }
  | { kind: 'manifest'; digest: string };

export type ProgressListener = (event: ProgressEvent) => void;
