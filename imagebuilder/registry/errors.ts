import { STATUS_CODES } from 'node:http';
import { BuildfleetError, type ErrorKind } from '../errors.js';
import { connectionErrorText, RetryableStatusError, StartOverError } from './retry.js';

/** Which registry, repository and operation an error is about: every message names them. */
export type ErrorContext = { host: string; repo?: string; what: string; /** 'registry' unless it is the token service. */ noun?: string };

/** One line, bounded: registry messages end up on a terminal. */
export function oneLine(text: string, max = 300): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/**
 * The registry's own explanation from a distribution error body
 * (`{"errors":[{"code","message","detail"}]}`), with a short detail when it is a string
 * (a digest, a tag). Falls back to the first bytes of a non-JSON body.
 */
export function registryMessage(body: string): { code?: string; message?: string } {
  if (!body) return {};
  try {
    const parsed = JSON.parse(body) as { errors?: Array<{ code?: unknown; message?: unknown; detail?: unknown }> };
    const first = parsed.errors?.[0];
    if (first) {
      const code = typeof first.code === 'string' ? first.code : undefined;
      let message = typeof first.message === 'string' ? first.message : code?.toLowerCase().replace(/_/g, ' ');
      if (typeof first.detail === 'string' && first.detail.length <= 100) message = `${message} (${first.detail})`;
      else if (first.detail && typeof first.detail === 'object' && 'Digest' in first.detail) {
        message = `${message} (${String((first.detail as { Digest: unknown }).Digest)})`;
      }
      return { ...(code !== undefined && { code }), ...(message !== undefined && { message: oneLine(message) }) };
    }
  } catch {
    // not JSON
  }
  const text = oneLine(body, 160);
  return text.startsWith('<') ? {} : { message: text };
}

export function statusText(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? ''}`.trim();
}

function where(ctx: ErrorContext): string {
  const noun = ctx.noun ?? 'registry';
  return ctx.repo ? `${noun} ${ctx.host} (repository ${ctx.repo})` : `${noun} ${ctx.host}`;
}

/**
 * An unexpected final status as a BuildfleetError: 404 not-found, 400 format, 405/501 unsupported,
 * anything else network. 401/403 are handled by the authenticator, which knows the credentials.
 */
export function statusError(status: number, body: string, ctx: ErrorContext): BuildfleetError {
  const { code, message } = registryMessage(body);
  const suffix = message ? `: ${message}` : '';
  let kind: ErrorKind = 'network';
  if (status === 404) kind = 'not-found';
  else if (code === 'MANIFEST_BLOB_UNKNOWN' || code === 'BLOB_UNKNOWN') kind = 'not-found';
  else if (code === 'DIGEST_INVALID' || code === 'SIZE_INVALID') kind = 'integrity';
  else if (status === 400 || status === 422) kind = 'format';
  else if (status === 405 || status === 501 || status === 413) kind = 'unsupported';
  return new BuildfleetError(kind, `${ctx.what} failed: ${where(ctx)} answered ${statusText(status)}${suffix}`);
}

/**
 * What escapes retries, turned into one line: a connection failure ('network', "cannot reach
 * registry H: connection refused"), or a 5xx/429 that outlived the retries.
 */
export function finalError(err: unknown, ctx: ErrorContext, attempts: number): unknown {
  if (err instanceof BuildfleetError) return err;
  const tries = attempts > 1 ? ` (${attempts} attempts)` : '';
  if (err instanceof RetryableStatusError) {
    return new BuildfleetError('network', `${ctx.what} failed: ${where(ctx)} answered ${err.message}${tries}`, { cause: err });
  }
  if (err instanceof StartOverError) {
    return new BuildfleetError('auth', `${ctx.what} failed: ${where(ctx)}: ${err.message}${tries}`, { cause: err });
  }
  const text = connectionErrorText(err);
  if (text !== undefined) {
    return new BuildfleetError('network', `cannot reach ${ctx.noun ?? 'registry'} ${ctx.host}: ${text}${tries}`, { cause: err });
  }
  return err;
}
