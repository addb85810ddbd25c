import { setTimeout as sleep } from 'node:timers/promises';
import { BuildfleetError } from '../errors.js';

/**
 * Retries with exponential backoff for what a retry can cure: 5xx, 429 and lost connections.
 * Everything else (4xx, integrity, auth) fails at once.
 */

/** An HTTP answer worth another try; carries the server's Retry-After when it sent one. */
export class RetryableStatusError extends Error {
  constructor(
    readonly status: number,
    readonly retryAfterMs: number | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'RetryableStatusError';
  }
}

/** Thrown when a request whose body cannot be replayed must start over (e.g. a token expired mid-upload). */
export class StartOverError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartOverError';
  }
}

const connectionCodes: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed while sending',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  UND_ERR_SOCKET: 'connection closed by the server',
  UND_ERR_CLOSED: 'connection closed',
  UND_ERR_CONNECT_TIMEOUT: 'connect timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no answer in time',
  UND_ERR_BODY_TIMEOUT: 'answer stalled',
  ERR_STREAM_PREMATURE_CLOSE: 'connection closed early',
};

/** Non-retryable codes that still mean "could not talk to it" (TLS problems). */
const tlsPattern = /^(?:ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_SSL_)/;

function errorCodes(err: unknown): string[] {
  const codes: string[] = [];
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    e = (e as { cause?: unknown }).cause;
  }
  return codes;
}

/** A short human text for a connection-level failure, or undefined when `err` is not one. */
export function connectionErrorText(err: unknown): string | undefined {
  for (const code of errorCodes(err)) {
    const text = connectionCodes[code];
    if (text) return text;
    if (tlsPattern.test(code)) return `TLS error: ${(err as Error).message}`;
  }
  if (err instanceof Error && /socket hang up|other side closed/i.test(err.message)) return 'connection closed by the server';
  return undefined;
}

export function isRetryable(err: unknown): boolean {
  if (err instanceof RetryableStatusError || err instanceof StartOverError) return true;
  // Our own errors are final, except a broken download feeding an upload (reopen and go again).
  if (err instanceof BuildfleetError) return err.kind === 'network' && err.cause !== undefined && isRetryable(err.cause);
  const codes = errorCodes(err);
  if (codes.some((code) => tlsPattern.test(code))) return false;
  return connectionErrorText(err) !== undefined;
}

/** Retry-After in seconds or as an HTTP date, in ms; capped so a hostile server cannot park us. */
export function parseRetryAfter(value: string | string[] | undefined, capMs = 120_000): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  const seconds = Number(text.trim());
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, capMs);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.min(Math.max(0, date - Date.now()), capMs);
}

export type RetryPolicy = { retries: number; baseDelayMs: number; maxDelayMs?: number };

/** Backoff before retry `attempt` (1-based): base·2^(attempt-1) with ±25 % jitter, or Retry-After. */
export function backoffMs(attempt: number, policy: RetryPolicy, err: unknown): number {
  if (err instanceof RetryableStatusError && err.retryAfterMs !== undefined) return err.retryAfterMs;
  const raw = Math.min(policy.baseDelayMs * 2 ** (attempt - 1), policy.maxDelayMs ?? 30_000);
  return Math.round(raw * (0.75 + Math.random() * 0.5));
}

/**
 * Runs `fn` until it succeeds, fails with a non-retryable error, or has run retries+1 times;
 * then the last error escapes (the caller turns it into a BuildfleetError).
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  onRetry?: (attempt: number, err: unknown, delayMs: number) => void,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= policy.retries || !isRetryable(err)) throw err;
      const delay = backoffMs(attempt + 1, policy, err);
      onRetry?.(attempt + 1, err, delay);
      await sleep(delay);
    }
  }
}
