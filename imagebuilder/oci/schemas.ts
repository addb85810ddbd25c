import { z } from 'zod';
import { BuildfleetError } from '../errors.js';

/**
 * Schemas for what comes over the wire. Objects are `loose` so fields we do not model
 * survive a parse: an image we copy must keep everything its author put in it.
 */
export const digestPattern = /^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$/;
export const Digest = z.string().regex(digestPattern, 'not a sha256/sha512 digest');

export const Platform = z.looseObject({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  'os.version': z.string().optional(),
  'os.features': z.array(z.string()).optional(),
});
export type Platform = z.infer<typeof Platform>;

export const Descriptor = z.looseObject({
  mediaType: z.string(),
  digest: Digest,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: Platform.optional(),
});
export type Descriptor = z.infer<typeof Descriptor>;

export const Manifest = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: Descriptor,
  layers: z.array(Descriptor),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type Manifest = z.infer<typeof Manifest>;

export const Index = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(Descriptor),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type Index = z.infer<typeof Index>;

export const HistoryEntry = z.looseObject({
  created: z.string().optional(),
  created_by: z.string().optional(),
  author: z.string().optional(),
  comment: z.string().optional(),
  empty_layer: z.boolean().optional(),
});
export type HistoryEntry = z.infer<typeof HistoryEntry>;

export const RuntimeConfig = z.looseObject({
  User: z.string().optional(),
  ExposedPorts: z.record(z.string(), z.unknown()).nullish(),
  Env: z.array(z.string()).nullish(),
  Entrypoint: z.array(z.string()).nullish(),
  Cmd: z.array(z.string()).nullish(),
  Volumes: z.record(z.string(), z.unknown()).nullish(),
  WorkingDir: z.string().optional(),
  Labels: z.record(z.string(), z.string()).nullish(),
  StopSignal: z.string().optional(),
  Healthcheck: z.unknown().optional(),
});
export type RuntimeConfig = z.infer<typeof RuntimeConfig>;

export const ImageConfig = z.looseObject({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  created: z.string().optional(),
  author: z.string().optional(),
  config: RuntimeConfig.nullish(),
  rootfs: z.looseObject({ type: z.literal('layers'), diff_ids: z.array(Digest) }),
  history: z.array(HistoryEntry).optional(),
});
export type ImageConfig = z.infer<typeof ImageConfig>;

/** Parses JSON bytes against a schema; failures name what was being read and the first bad field. */
export function parseJson<T extends z.ZodType>(schema: T, bytes: Uint8Array | string, what: string): z.infer<T> {
  let value: unknown;
  try {
    value = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new BuildfleetError('format', `${what} is not valid JSON: ${(err as Error).message}`);
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue && issue.path.length > 0 ? ` at ${issue.path.join('.')}` : '';
    throw new BuildfleetError('format', `${what} is malformed${where}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data;
}

/** A manifest or an index, told apart by mediaType, or by shape when mediaType is absent (OCI allows that). */
export type AnyManifest = { kind: 'manifest'; manifest: Manifest } | { kind: 'index'; index: Index };

export function parseAnyManifest(bytes: Uint8Array, contentType: string | undefined, what: string): AnyManifest {
  let raw: { mediaType?: unknown; manifests?: unknown };
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new BuildfleetError('format', `${what} is not valid JSON: ${(err as Error).message}`);
  }
  const mediaType = typeof raw.mediaType === 'string' ? raw.mediaType : contentType;
  const looksLikeIndex =
    mediaType === 'application/vnd.oci.image.index.v1+json' ||
    mediaType === 'application/vnd.docker.distribution.manifest.list.v2+json' ||
    Array.isArray(raw.manifests);
  return looksLikeIndex
    ? { kind: 'index', index: parseJson(Index, bytes, what) }
    : { kind: 'manifest', manifest: parseJson(Manifest, bytes, what) };
}
