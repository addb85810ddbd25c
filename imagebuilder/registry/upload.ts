import { once } from 'node:events';
import { pipeline, type Readable } from 'node:stream';
import { digestAlgorithm, DigestStream } from '../oci/digest.js';
import { BuildfleetError } from '../errors.js';
import { repositoryScope } from './auth.js';
import { finalError, statusError, type ErrorContext } from './errors.js';
import { header, readText, type HttpResponse, type RegistryHttp } from './http.js';
import { StartOverError, withRetry } from './retry.js';

export type UploadExpectation = {
  digest?: string;
  size?: number;
  /**
   * false: do not hash here; the registry checks `digest` at the PUT (DIGEST_INVALID, nothing
   * committed). Default true: a mismatch is caught before the PUT is sent.
   */
  hashLocally?: boolean;
  /**
   * For bytes still being produced, whose digest is known only at their end: they are sent as
   * they come, and the PUT waits for this and commits under its digest (the registry checks it).
   * A rejection commits nothing.
   */
  settled?: Promise<{ digest: string; size: number }>;
  /** One attempt only: the source cannot be read again (the caller retries another way). */
  once?: boolean;
};

/** How long a registry may take to answer once the whole body of a PATCH is sent. */
const answerTimeoutMs = 5 * 60_000;

/**
 * POST → PATCH (streaming, or chunked with Content-Range) → PUT ?digest=, hashing while the
 * bytes go out so a blob is read once. Each attempt reopens the source; nothing is committed
 * (no PUT) when the content does not match `expected`. An abandoned session is DELETEd.
 */
export async function uploadBlob(
  http: RegistryHttp,
  repo: string,
  open: () => Promise<Readable>,
  expected: UploadExpectation,
  chunkSize: number | undefined,
): Promise<{ digest: string; size: number }> {
  const host = http.endpoint.host;
  const ctx: ErrorContext = { host, repo, what: `upload of blob${expected.digest ? ` ${expected.digest}` : ''}` };
  const scopes = [repositoryScope(repo, ['pull', 'push'])];
  const algorithm = expected.digest ? digestAlgorithm(expected.digest) || 'sha256' : 'sha256';

  const check = async (res: HttpResponse, wanted: number, step: string): Promise<void> => {
    if (res.status === wanted) return;
    if (res.status === 401 || res.status === 403) throw await http.authError(res, repo, 'push');
    const text = await readText(res.body, 65536).catch(() => '');
    if (res.status === 404 && step !== 'POST') throw new StartOverError(`upload session vanished at ${step}`);
    throw statusError(res.status, text, { ...ctx, what: `${ctx.what} (${step})` });
  };
  const nextLocation = (res: HttpResponse, current: string): string => {
    const location = header(res.headers, 'location');
    if (!location) throw new BuildfleetError('format', `${ctx.what}: registry ${host} gave no upload Location`);
    return new URL(location, current).toString();
  };

  const attempt = async (): Promise<{ digest: string; size: number }> => {
    let source: Readable | undefined;
    let location: string | undefined;
    let committed = false;
    try {
      // Start the session before opening the source, so a refused POST costs no download.
      const started = await http.send({ method: 'POST', url: `/v2/${repo}/blobs/uploads/`, scopes, access: 'push' });
      await check(started, 202, 'POST');
      await started.body.dump();
      location = nextLocation(started, http.endpoint.origin);
      source = await open();

      const trusted = expected.hashLocally === false && expected.digest !== undefined;
      // Settled bytes are hashed by their producer: here they are only counted.
      const hasher = new DigestStream(algorithm, trusted || expected.settled ? { knownDigest: expected.digest ?? '' } : {});
      // The source's own error (a broken download, corrupt input) is what the caller must see,
      // not the request failure it causes.
      let sourceError: Error | undefined;
      source.once('error', (err: Error) => (sourceError ??= err));
      pipeline(source, hasher, (err) => {
        if (err) sourceError ??= err;
      });
      try {
        location = chunkSize && chunkSize > 0 ? await patchChunks(hasher, location, chunkSize) : await patchStream(hasher, location);
      } catch (err) {
        throw sourceError ?? err;
      }
      if (sourceError) throw sourceError;
      if (!hasher.readableEnded) await once(hasher, 'end');

      const settled = expected.settled ? await expected.settled : undefined;
      const digest = settled?.digest ?? hasher.digest;
      const size = hasher.size;
      if (settled && size !== settled.size) {
        throw new BuildfleetError('integrity', `${ctx.what} to ${host}/${repo}: sent ${size} bytes, the producer wrote ${settled.size}; not committed`);
      }
      if (expected.digest !== undefined && digest !== expected.digest) {
        throw new BuildfleetError('integrity', `${ctx.what} to ${host}/${repo}: content digest ${digest} does not match ${expected.digest}; not committed`);
      }
      if (expected.size !== undefined && size !== expected.size) {
        throw new BuildfleetError('integrity', `${ctx.what} to ${host}/${repo}: got ${size} bytes, expected ${expected.size}; not committed`);
      }
      const commitUrl = new URL(location);
      commitUrl.searchParams.set('digest', digest);
      const put = await http.send({ method: 'PUT', url: commitUrl.toString(), body: Buffer.alloc(0), scopes, access: 'push' });
      await check(put, 201, 'PUT');
      await put.body.dump();
      committed = true;
      return { digest, size };
    } finally {
      if (source && !source.destroyed) source.destroy();
      if (location && !committed) await cancel(location);
    }
  };

  /** One PATCH whose body is the hashed source, sent chunked as it is produced. */
  const patchStream = async (body: DigestStream, location: string): Promise<string> => {
    // undici's headers timer would run during a slow (compressing) upload: wait for the answer
    // without it, but only for answerTimeoutMs after the body has gone out.
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    body.once('end', () => {
      timer = setTimeout(() => controller.abort(Object.assign(new Error('no answer to PATCH in time'), { code: 'UND_ERR_HEADERS_TIMEOUT' })), answerTimeoutMs);
      timer.unref();
    });
    try {
      const res = await http.send({
        method: 'PATCH',
        url: location,
        headers: { 'content-type': 'application/octet-stream' },
        body,
        scopes,
        access: 'push',
        headersTimeout: 0,
        signal: controller.signal,
      });
      await check(res, 202, 'PATCH');
      await res.body.dump();
      return nextLocation(res, location);
    } finally {
      clearTimeout(timer);
    }
  };

  /**
   * PATCHes of `chunkSize` bytes with Content-Range, for registries or proxies that cap request
   * sizes, and for uploads that run beside their producer: the next chunk is gathered while the
   * previous one is sent, and each PATCH ends with the registry flushing it to its disk (as
   * distribution does) while the producer goes on, not all of it after the last byte.
   */
  const patchChunks = async (body: DigestStream, location: string, size: number): Promise<string> => {
    let offset = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let sending: Promise<void> = Promise.resolve();
    const send = (pieces: Buffer[], length: number) => {
      const start = offset;
      offset += length;
      return sending.then(async () => {
        const range = `${start}-${start + length - 1}`;
        const res = await http.send({
          method: 'PATCH',
          url: location,
          headers: { 'content-type': 'application/octet-stream', 'content-range': range, 'content-length': String(length) },
          // The pieces as they came: no copy into one buffer, and sent again after a 401.
          body: pieces,
          scopes,
          access: 'push',
        });
        await check(res, 202, `PATCH ${range}`);
        await res.body.dump();
        location = nextLocation(res, location);
      });
    };
    const flush = async () => {
      const next = send(pending, pendingBytes);
      next.catch(() => {}); // awaited at the next flush or the end
      pending = [];
      pendingBytes = 0;
      // At most one chunk on the wire and one being gathered.
      await sending;
      sending = next;
    };
    for await (const piece of body as AsyncIterable<Buffer>) {
      let data = piece;
      while (data.length > 0) {
        const take = Math.min(size - pendingBytes, data.length);
        pending.push(data.subarray(0, take));
        pendingBytes += take;
        data = data.subarray(take);
        if (pendingBytes === size) await flush();
      }
    }
    if (pendingBytes > 0) await flush();
    await sending;
    return location;
  };

  const cancel = async (location: string): Promise<void> => {
    try {
      const res = await http.send({ method: 'DELETE', url: location, scopes, access: 'push' });
      await res.body.dump();
    } catch {
      // best effort: the registry purges abandoned uploads
    }
  };

  // Awaited only once the bytes are sent: it may fail earlier, and that must not go unhandled.
  expected.settled?.catch(() => {});
  let attempts = 0;
  try {
    return await withRetry(async () => {
      attempts++;
      return attempt();
    }, expected.once ? { ...http.policy, retries: 0 } : http.policy);
  } catch (err) {
    throw finalError(err, ctx, attempts);
  }
}
