import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from '../package-root.js';

/**
 * The optional native accelerators (./addon.c over the system's libdeflate and Node's own
 * OpenSSL), built by `npm run build:native`. Absent, unbuilt or disabled (BUILDFLEET_NATIVE=0),
 * callers fall back to Node's zlib and crypto: the same formats and digests, more main-thread time.
 */
export type Native = {
  /**
   * A complete gzip member (header, deflate data, CRC-32, size) of the buffers one after another,
   * put together and compressed on the thread pool; they must not change until it settles.
   */
  gzipMember(input: Buffer[], level: number): Promise<Buffer>;
  /** A SHA-256 fed on the thread pool: one update at a time, in order. */
  sha256(): NativeHash;
  /** A CRC-64/ISO (Go's hash/crc64 with the ISO table, what tar-split keeps) fed on the thread pool. */
  crc64(): NativeCrc64;
  /**
   * One layer's files written from its compressed bytes on the thread pool (layer_extract.c):
   * gunzip, diff_id, tar walk, CRC-64s and the tree under `diffDir`, as Docker's overlay2 applier
   * leaves it. Undefined where the addon predates it.
   */
  layerExtract?(diffDir: string, gzip: boolean): NativeLayerExtract;
  libdeflateVersion: string;
};

/** Errors are `kind\tmessage` (format, unsupported, layer, environment, aborted), without the layer's name. */
export type NativeLayerExtract = {
  /** The next compressed bytes, in order, one call at a time; resolves with the tar-split records they made. */
  push(buffers: Buffer[]): Promise<Buffer>;
  /** The input has ended: resolves once every file and directory is whole and closed. */
  finish(): Promise<{ diffId: string; entries: number; sizeOnDisk: number; records: Buffer }>;
  /** The running or next call fails with kind `aborted`, and the extractor lets go of the tree. */
  abort(): void;
};

export type NativeCrc64 = {
  /** Feeds the buffers in order; they must not change until the promise settles. */
  update(buffers: Buffer[]): Promise<void>;
  /** Feeds the buffers on this thread, now (short payloads: cheaper than a trip to the pool); not while an update runs. */
  updateNow(buffers: Buffer[]): void;
  /** The 8-byte big-endian sum, once no update is running. */
  final(): Buffer;
};

export type NativeHash = {
  /** Hashes the buffers in order; they must not change until the promise settles. */
  update(buffers: Buffer[]): Promise<void>;
  /** The hex digest, once no update is running. */
  final(): string;
};

type Callback<T extends unknown[]> = (err: Error | null, ...results: T) => void;
type Addon = {
  gzipMember(input: Buffer[], level: number, callback: Callback<[Buffer]>): void;
  sha256New(): object;
  sha256Update(hasher: object, buffers: Buffer[], callback: Callback<[]>): void;
  sha256Final(hasher: object): string;
  crc64New(): object;
  crc64Update(hasher: object, buffers: Buffer[], callback: Callback<[]>): void;
  crc64UpdateSync(hasher: object, buffers: Buffer[]): void;
  crc64Final(hasher: object): Buffer;
  layerExtractNew?(diffDir: string, gzip: boolean): object;
  layerExtractPush(handle: object, buffers: Buffer[], callback: Callback<[Buffer]>): void;
  layerExtractFinish(handle: object, callback: Callback<[{ diffId: string; entries: number; sizeOnDisk: number; records: Buffer }]>): void;
  layerExtractAbort(handle: object): void;
  libdeflateVersion: string;
};

/** From the source tree (tsx) and from dist/ (tsc output), the addon sits in the source tree's build/. */
const candidates = [join(packageRoot, 'imagebuilder', 'native', 'build', 'Release', 'buildfleet_native.node')];

let loaded: Native | null | undefined;

export function native(): Native | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  if (process.env.BUILDFLEET_NATIVE === '0') return undefined;
  const path = candidates.find((candidate) => existsSync(candidate));
  if (!path) return undefined;
  let addon: Addon;
  try {
    addon = createRequire(import.meta.url)(path) as Addon;
  } catch {
    // Built for another Node ABI, or libdeflate.so gone: fall back rather than fail.
    return undefined;
  }
  loaded = {
    libdeflateVersion: addon.libdeflateVersion,
    gzipMember: (input, level) => new Promise((resolve, reject) => addon.gzipMember(input, level, (err, member) => (err ? reject(err) : resolve(member)))),
    sha256: () => {
      const hasher = addon.sha256New();
      return {
        update: (buffers) => new Promise((resolve, reject) => addon.sha256Update(hasher, buffers, (err) => (err ? reject(err) : resolve()))),
        final: () => addon.sha256Final(hasher),
      };
    },
    crc64: () => {
      const hasher = addon.crc64New();
      return {
        update: (buffers) => new Promise((resolve, reject) => addon.crc64Update(hasher, buffers, (err) => (err ? reject(err) : resolve()))),
        updateNow: (buffers) => addon.crc64UpdateSync(hasher, buffers),
        final: () => addon.crc64Final(hasher),
      };
    },
    ...(addon.layerExtractNew && {
      layerExtract: (diffDir: string, gzip: boolean): NativeLayerExtract => {
        const handle = addon.layerExtractNew!(diffDir, gzip);
        return {
          push: (buffers) => new Promise((resolve, reject) => addon.layerExtractPush(handle, buffers, (err, records) => (err ? reject(err) : resolve(records)))),
          finish: () => new Promise((resolve, reject) => addon.layerExtractFinish(handle, (err, result) => (err ? reject(err) : resolve(result)))),
          abort: () => addon.layerExtractAbort(handle),
        };
      },
    }),
  };
  return loaded;
}
