import type { Readable } from 'node:stream';
import pLimit, { type LimitFunction } from 'p-limit';
import { digestAlgorithm, sha256Digest, VerifyingStream } from '../oci/digest.js';
import { BuildfleetError } from '../errors.js';
import { indexMediaTypes, manifestAccept, manifestMediaTypes, MediaType } from '../oci/media-types.js';
import { digestPattern, type Descriptor } from '../oci/schemas.js';
import { createHash } from 'node:crypto';
import { repositoryScope } from './auth.js';
import { registryMessage, statusError, type ErrorContext } from './errors.js';
import { connectionErrorText } from './retry.js';
import { header, readBytes, readText, RegistryHttp, type HttpResponse } from './http.js';
import { defaultConcurrency, type Endpoint, type RegistryOptions } from './options.js';
import { uploadBlob, type UploadExpectation } from './upload.js';

/** Manifests bigger than this are refused (containerd uses the same bound). */
const maxManifestBytes = 4 << 20;

export type FetchedManifest = { bytes: Buffer; mediaType: string; digest: string };

const pull = (repo: string) => [repositoryScope(repo, ['pull'])];
const pullPush = (repo: string) => [repositoryScope(repo, ['pull', 'push'])];

/**
 * Chunks of an upload that runs beside its producer (uploadBlobWhileWritten). Each PATCH costs
 * distribution a flush to disk and a saved hash state: fewer, larger chunks shorten the write
 * phase, too large ones lengthen the tail after the last byte (the squash bench chose 16 MiB).
 */
const LIVE_CHUNK = 16 << 20;

/**
 * A client of the OCI distribution API for one registry host. Keeps connections (one undici
 * keep-alive Agent) and tokens for its lifetime; share one per host. Every failure is a
 * BuildfleetError whose message is one line naming the registry and repository.
 */
export class RegistryClient {
  readonly host: string;
  /**
   * Bounds operations on this registry (uploads, HEADs, mounts, manifest requests). Blob
   * downloads are not counted: their bytes flow after getBlob returns, and an upload may read
   * a download from the same registry (copy between repositories), which must not wait for a slot.
   */
  readonly limit: LimitFunction;
  private readonly http: RegistryHttp;

  constructor(
    host: string,
    private readonly options: RegistryOptions = {},
  ) {
    this.http = new RegistryHttp(host, options);
    this.host = this.http.endpoint.host;
    this.limit = pLimit(Math.max(1, options.concurrency ?? defaultConcurrency));
  }

  get endpoint(): Endpoint {
    return this.http.endpoint;
  }

  /** Closes the connections. The client is unusable afterwards. */
  async close(): Promise<void> {
    await this.http.close();
  }

  /** Checks the registry answers the v2 API and accepts our credentials (when it asks for them). */
  async ping(): Promise<void> {
    const ctx: ErrorContext = { host: this.host, what: 'ping' };
    await this.http.call({ method: 'GET', url: '/v2/', scopes: [], access: 'pull' }, ctx, async (res) => {
      if (res.status === 401 || res.status === 403) throw await this.http.authError(res, undefined, 'pull');
      if (res.status !== 200) throw statusError(res.status, await readText(res.body, 65536), ctx);
      await res.body.dump();
    });
  }

  /** HEAD of a blob: its size, or undefined when the repository does not have it. */
  hasBlob(repo: string, digest: string): Promise<number | undefined> {
    const ctx: ErrorContext = { host: this.host, repo, what: `HEAD blob ${digest}` };
    return this.limit(() =>
      this.http.call({ method: 'HEAD', url: `/v2/${repo}/blobs/${digest}`, scopes: pull(repo), access: 'pull', followRedirects: true }, ctx, async (res) => {
        await res.body.dump();
        if (res.status === 404) return undefined;
        if (res.status === 401 || res.status === 403) throw await this.http.authError(res, repo, 'pull');
        if (res.status !== 200) throw statusError(res.status, '', ctx);
        const length = Number(header(res.headers, 'content-length'));
        return Number.isFinite(length) ? length : 0;
      }),
    );
  }

  /**
   * A stream of a blob's bytes that errors (with 'integrity') instead of ending when they do not
   * match the descriptor. Redirects to storage are followed without our Authorization.
   */
  async getBlob(repo: string, descriptor: Pick<Descriptor, 'digest' | 'size'>, options: { verify?: boolean } = {}): Promise<Readable> {
    const { digest, size } = descriptor;
    const ctx: ErrorContext = { host: this.host, repo, what: `GET blob ${digest}` };
    const res = await this.http.call({ method: 'GET', url: `/v2/${repo}/blobs/${digest}`, scopes: pull(repo), access: 'pull', followRedirects: true }, ctx, async (r) => {
      if (r.status === 200) return r;
      await this.failBlob(r, repo, digest, ctx);
      return r; // not reached
    });
    const verifier = new VerifyingStream(digest, size, `blob ${digest} from ${this.host}/${repo}`, { hash: options.verify !== false });
    res.body.on('error', (err) => {
      const text = connectionErrorText(err);
      verifier.destroy(text ? new BuildfleetError('network', `download of blob ${digest} from ${this.host}/${repo} broke: ${text}`, { cause: err }) : err);
    });
    verifier.once('close', () => {
      if (!res.body.readableEnded) res.body.destroy();
    });
    res.body.pipe(verifier);
    return verifier;
  }

  /**
   * The bytes of a blob from `offset` on (a Range request; the whole blob for 0), unverified: for
   * a caller that resumes a broken download and verifies the digest across the pieces itself.
   * Resolves once the registry answered; the retry policy covers getting that answer.
   */
  async getBlobFrom(repo: string, digest: string, offset: number, signal?: AbortSignal): Promise<Readable> {
    const ctx: ErrorContext = { host: this.host, repo, what: `GET blob ${digest}${offset ? ` from byte ${offset}` : ''}` };
    const headers = offset > 0 ? { range: `bytes=${offset}-` } : undefined;
    const res = await this.http.call({ method: 'GET', url: `/v2/${repo}/blobs/${digest}`, ...(headers && { headers }), scopes: pull(repo), access: 'pull', followRedirects: true, ...(signal && { signal }) }, ctx, async (r) => {
      if (r.status === 200 && offset === 0) return r;
      if (r.status === 206 && offset > 0) return r;
      if (r.status === 200 || r.status === 206) {
        await r.body.dump();
        throw new BuildfleetError('network', `registry ${this.host} answered ${r.status} to a request for blob ${digest} from byte ${offset}`);
      }
      await this.failBlob(r, repo, digest, ctx);
      return r; // not reached
    });
    return res.body;
  }

  /** GET of a manifest or index by tag or digest, with its bytes, media type and (verified) digest. */
  getManifest(repo: string, tagOrDigest: string): Promise<FetchedManifest> {
    const ctx: ErrorContext = { host: this.host, repo, what: `GET manifest ${repo}${tagOrDigest.includes(':') ? '@' : ':'}${tagOrDigest}` };
    const byDigest = digestPattern.test(tagOrDigest);
    return this.limit(() =>
      this.http.call({ method: 'GET', url: `/v2/${repo}/manifests/${tagOrDigest}`, headers: { accept: manifestAccept }, scopes: pull(repo), access: 'pull' }, ctx, async (res) => {
        if (res.status === 401 || res.status === 403) throw await this.http.authError(res, repo, 'pull');
        if (res.status === 404) {
          const { message } = registryMessage(await readText(res.body, 65536).catch(() => ''));
          throw new BuildfleetError('not-found', `manifest ${tagOrDigest} not found in repository ${repo} on registry ${this.host}${message ? `: ${message}` : ''}`);
        }
        if (res.status !== 200) throw statusError(res.status, await readText(res.body, 65536), ctx);
        const bytes = await readBytes(res.body, maxManifestBytes, `manifest ${tagOrDigest} of ${this.host}/${repo}`);
        const digest = byDigest ? digestWithAlgorithmOf(tagOrDigest, bytes) : sha256Digest(bytes);
        const where = `manifest ${tagOrDigest} from ${this.host}/${repo}`;
        if (byDigest && digest !== tagOrDigest) throw new BuildfleetError('integrity', `${where}: content digest ${digest} does not match`);
        // By tag, the registry's Docker-Content-Digest is the only statement of what the tag points
        // at: bytes that differ from it were changed on the way (a proxy, a cache, a broken mirror).
        const announced = header(res.headers, 'docker-content-digest')?.trim();
        if (!byDigest && announced) {
          if (!digestPattern.test(announced)) {
            throw new BuildfleetError('integrity', `${where}: registry sent an invalid Docker-Content-Digest "${announced.slice(0, 100)}"`);
          }
          const actual = digestWithAlgorithmOf(announced, bytes);
          if (actual !== announced) {
            throw new BuildfleetError('integrity', `${where}: content digest ${actual} does not match the registry's Docker-Content-Digest ${announced}`);
          }
        }
        return { bytes, mediaType: manifestMediaTypeOf(header(res.headers, 'content-type'), bytes), digest };
      }),
    );
  }

  /** PUT of a manifest under a tag or digest; returns its digest. Its blobs must be pushed first. */
  putManifest(repo: string, tagOrDigest: string, bytes: Buffer, mediaType: string): Promise<string> {
    const ctx: ErrorContext = { host: this.host, repo, what: `PUT manifest ${repo}${tagOrDigest.includes(':') ? '@' : ':'}${tagOrDigest}` };
    const digest = sha256Digest(bytes);
    return this.limit(() =>
      this.http.call(
        { method: 'PUT', url: `/v2/${repo}/manifests/${tagOrDigest}`, headers: { 'content-type': mediaType }, body: bytes, scopes: pullPush(repo), access: 'push' },
        ctx,
        async (res) => {
          if (res.status === 401 || res.status === 403) throw await this.http.authError(res, repo, 'push');
          if (res.status !== 201 && res.status !== 200) {
            const err = statusError(res.status, await readText(res.body, 65536), ctx);
            // distribution answers DIGEST_INVALID for a manifest it cannot parse: our bytes, not corruption.
            throw err.kind === 'integrity' ? new BuildfleetError('format', err.message) : err;
          }
          await res.body.dump();
          const answered = header(res.headers, 'docker-content-digest');
          if (answered && digestAlgorithm(answered) === 'sha256' && answered !== digest) {
            throw new BuildfleetError('integrity', `${ctx.what}: registry ${this.host} stored digest ${answered}, expected ${digest}`);
          }
          return digest;
        },
      ),
    );
  }

  /**
   * Cross-repository mount (POST ?mount=&from=): true when the registry linked the blob without
   * an upload. When it starts an upload instead (202), that upload is cancelled and false returned;
   * so is a refusal of access to `fromRepo`: the caller then uploads.
   */
  mountBlob(repo: string, digest: string, fromRepo: string): Promise<boolean> {
    const ctx: ErrorContext = { host: this.host, repo, what: `mount of blob ${digest} from ${fromRepo}` };
    const query = new URLSearchParams({ mount: digest, from: fromRepo });
    const scopes = [...pullPush(repo), ...pull(fromRepo)];
    return this.limit(() =>
      this.http.call({ method: 'POST', url: `/v2/${repo}/blobs/uploads/?${query}`, scopes, access: 'push' }, ctx, async (res) => {
        await res.body.dump();
        if (res.status === 201) return true;
        if (res.status === 202) {
          const location = header(res.headers, 'location');
          if (location) await this.cancelUpload(location);
          return false;
        }
        if (res.status === 401 || res.status === 403 || res.status === 404) return false;
        throw statusError(res.status, '', ctx);
      }),
    );
  }

  /**
   * Uploads a blob: POST, one streaming PATCH hashed on the way (or PATCHes of chunkSize),
   * then PUT ?digest=. A retry calls `open()` again. With `expected.digest`, content that hashes
   * differently fails with 'integrity' and is not committed.
   */
  uploadBlob(repo: string, open: () => Promise<Readable>, expected: UploadExpectation = {}): Promise<{ digest: string; size: number }> {
    return this.limit(() => uploadBlob(this.http, repo, open, expected, this.options.chunkSize));
  }

  /**
   * An upload of bytes still being produced (`expected.settled`), one attempt. Not counted
   * against the limit: its producer may wait on its reading, and nothing it waits for may wait
   * for a slot. Sent in chunks (LIVE_CHUNK unless chunkSize says otherwise): a registry that
   * flushes each request to disk (distribution does) then does so while the blob is still being
   * produced, not all at once after its last byte. `chunkBytes` overrides the chunk size for
   * this upload (it holds up to two chunks at once).
   */
  uploadBlobWhileWritten(repo: string, bytes: Readable, settled: Promise<{ digest: string; size: number }>, chunkBytes?: number): Promise<{ digest: string; size: number }> {
    let opened = false;
    const open = async () => {
      if (opened) throw new Error('a blob being written can be sent only once');
      opened = true;
      return bytes;
    };
    return uploadBlob(this.http, repo, open, { settled, once: true }, chunkBytes ?? this.options.chunkSize ?? LIVE_CHUNK);
  }

  /** Abandons an upload session; best effort (the registry purges stale uploads anyway). */
  async cancelUpload(location: string): Promise<void> {
    try {
      const res = await this.http.send({ method: 'DELETE', url: new URL(location, this.endpoint.origin).toString(), scopes: [], access: 'push' });
      await res.body.dump();
    } catch {
      // best effort
    }
  }

  private async failBlob(res: HttpResponse, repo: string, digest: string, ctx: ErrorContext): Promise<never> {
    if (res.status === 401 || res.status === 403) throw await this.http.authError(res, repo, 'pull');
    const text = await readText(res.body, 65536).catch(() => '');
    if (res.status === 404) {
      const { message } = registryMessage(text);
      throw new BuildfleetError('not-found', `blob ${digest} not found in repository ${repo} on registry ${this.host}${message ? `: ${message}` : ''}`);
    }
    throw statusError(res.status, text, ctx);
  }
}

/** The digest of `bytes` computed with the algorithm `reference` names (sha256 or sha512). */
function digestWithAlgorithmOf(reference: string, bytes: Buffer): string {
  const algorithm = digestAlgorithm(reference);
  return algorithm === 'sha256' ? sha256Digest(bytes) : `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** The Content-Type when it names a manifest type; else the document's own mediaType field. */
function manifestMediaTypeOf(contentType: string | undefined, bytes: Buffer): string {
  const type = contentType?.split(';')[0]?.trim();
  if (type && (manifestMediaTypes.includes(type) || indexMediaTypes.includes(type))) return type;
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    if (typeof parsed.mediaType === 'string') return parsed.mediaType;
    return Array.isArray(parsed.manifests) ? MediaType.ociIndex : MediaType.ociManifest;
  } catch {
    return type ?? MediaType.ociManifest;
  }
}
