import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../../imagebuilder/errors.js';
import type { RegistryClient } from '../../imagebuilder/registry/client.js';
import { backoffMs, connectionErrorText, isRetryable } from '../../imagebuilder/registry/retry.js';

/** How often a broken download is resumed, and the first wait (doubling) before each resume. */
export type ResumePolicy = { retries: number; baseDelayMs: number };

export const defaultResumePolicy: ResumePolicy = { retries: 4, baseDelayMs: 1000 };

/**
 * A blob's bytes as one stream, whatever happens to the connections under it: when a download
 * breaks (connection lost, registry restarted, 5xx), it is resumed from the byte it broke at with
 * a Range request, after a backoff, up to `policy.retries` times in a row. The bytes are not
 * verified here; the caller hashes the whole stream (a resume cannot hide a bad piece from that).
 */
export function resumableBlob(
  client: RegistryClient,
  repo: string,
  digest: string,
  size: number,
  options: { signal?: AbortSignal; policy?: ResumePolicy; onBytes?: (bytes: number) => void } = {},
): Readable {
  const policy = options.policy ?? defaultResumePolicy;
  async function* pieces(): AsyncGenerator<Buffer> {
    let offset = 0;
    let failures = 0;
    while (offset < size || size === 0) {
      try {
        const body = await client.getBlobFrom(repo, digest, offset, options.signal);
        for await (const chunk of body) {
          const bytes = chunk as Buffer;
          offset += bytes.length;
          failures = 0;
          options.onBytes?.(bytes.length);
          yield bytes;
        }
        if (offset >= size) return;
        throw Object.assign(new Error('the registry ended the download early'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason ?? err;
        const retryable = isRetryable(err) || (err instanceof BuildfleetError && err.kind === 'network');
        if (!retryable || ++failures > policy.retries) {
          if (err instanceof BuildfleetError) throw err;
          const text = connectionErrorText(err) ?? (err as Error).message;
          throw new BuildfleetError('network', `download of blob ${digest} from ${client.host}/${repo} broke at byte ${offset} of ${size} and could not be resumed (${policy.retries} tries): ${text}`, { cause: err });
        }
        await sleep(backoffMs(failures, { retries: policy.retries, baseDelayMs: policy.baseDelayMs }, err), undefined, options.signal ? { signal: options.signal } : undefined);
      }
    }
  }
  return Readable.from(pieces(), { objectMode: false });
}
