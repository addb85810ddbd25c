import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { BuildfleetError } from '../errors.js';
import { Authenticator, type TokenFetch } from './auth.js';
import { finalError, oneLine, registryMessage, statusText, type ErrorContext } from './errors.js';
import { defaultRetries, defaultRetryBaseDelayMs, endpointFor, type Endpoint, type RegistryOptions } from './options.js';
import { parseRetryAfter, RetryableStatusError, StartOverError, withRetry, type RetryPolicy } from './retry.js';

export type Headers = Record<string, string | string[] | undefined>;

export type HttpRequest = {
  method: string;
  /** A path on the registry (`/v2/...`) or an absolute URL (upload locations). */
  url: string;
  headers?: Record<string, string>;
  /**
   * A Buffer, or a list of them (sent one after another, never copied into one), can be sent
   * again after a 401; a stream cannot (a 401 then means start over).
   */
  body?: Buffer | Buffer[] | string | Readable;
  /** Token scopes the request needs (empty for /v2/). */
  scopes: string[];
  /** pull or push: for error messages. */
  access: 'pull' | 'push';
  /** Follow 3xx (blob downloads); Authorization never goes to another origin. */
  followRedirects?: boolean;
  headersTimeout?: number;
  signal?: AbortSignal;
};

export type HttpResponse = { status: number; headers: Headers; body: Dispatcher.ResponseData['body']; url: string };

export function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The transport under a RegistryClient: one keep-alive undici Agent per client, the
 * authenticator, redirects, and the retry policy. Statuses other than 5xx/429 come back to the
 * caller, which knows what they mean for its operation.
 */
export class RegistryHttp {
  readonly endpoint: Endpoint;
  readonly auth: Authenticator;
  readonly policy: RetryPolicy;
  private readonly agent: Agent;

  constructor(
    host: string,
    private readonly options: RegistryOptions,
  ) {
    this.endpoint = endpointFor(host, options);
    this.policy = { retries: options.retries ?? defaultRetries, baseDelayMs: options.retryBaseDelayMs ?? defaultRetryBaseDelayMs };
    let ca: string[] | undefined;
    if (options.caFile) {
      try {
        ca = [...rootCertificates, readFileSync(options.caFile, 'utf8')];
      } catch (err) {
        throw new BuildfleetError('usage', `cannot read CA file ${options.caFile}: ${(err as Error).message}`);
      }
    }
    this.agent = new Agent({ keepAliveTimeout: 30_000, ...(ca && { connect: { ca } }) });
    this.auth = new Authenticator(this.endpoint, options, this.tokenFetch);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** One HTTP exchange, reported to onRequest (status 0 when none came back). */
  async raw(method: string, url: string, init: { headers?: Record<string, string>; body?: Buffer | string | Readable; headersTimeout?: number; signal?: AbortSignal }): Promise<Dispatcher.ResponseData> {
    try {
      const response = await request(url, {
        method: method as Dispatcher.HttpMethod,
        dispatcher: this.agent,
        headers: { 'user-agent': 'buildfleet', ...init.headers },
        ...(init.body !== undefined && { body: init.body }),
        ...(init.headersTimeout !== undefined && { headersTimeout: init.headersTimeout }),
        ...(init.signal && { signal: init.signal }),
      });
      this.options.onRequest?.({ method, url, status: response.statusCode });
      return response;
    } catch (err) {
      this.options.onRequest?.({ method, url, status: 0 });
      throw err;
    }
  }

  /**
   * Sends with authentication and redirects, no retry. 5xx and 429 throw RetryableStatusError
   * (body drained); other statuses are returned with the body unread.
   */
  async send(req: HttpRequest): Promise<HttpResponse> {
    let url = req.url.startsWith('/') ? `${this.endpoint.origin}${req.url}` : req.url;
    let method = req.method;
    let scopes = req.scopes;
    let authRounds = 0;
    let redirects = 0;
    for (;;) {
      const sameOrigin = new URL(url).origin === this.endpoint.origin;
      const authorization = sameOrigin ? await this.auth.header(scopes) : undefined;
      const headers = { ...req.headers, ...(authorization && { authorization }) };
      const body = redirects === 0 ? (Array.isArray(req.body) ? Readable.from(req.body) : req.body) : undefined;
      const res = await this.raw(method, url, { headers, ...(body !== undefined && { body }), ...(req.headersTimeout !== undefined && { headersTimeout: req.headersTimeout }), ...(req.signal && { signal: req.signal }) });
      const status = res.statusCode;
      if (status === 401 && sameOrigin && authRounds === 0) {
        const retryScopes = await this.auth.unauthorized(res.headers['www-authenticate'], scopes, authorization);
        if (retryScopes) {
          await res.body.dump();
          if (req.body instanceof Readable) {
            throw new StartOverError(`the registry asked for authentication in the middle of ${req.method} ${new URL(url).pathname}`);
          }
          authRounds++;
          scopes = retryScopes;
          continue;
        }
      }
      if (req.followRedirects && [301, 302, 303, 307, 308].includes(status)) {
        const location = header(res.headers, 'location');
        await res.body.dump();
        if (!location || ++redirects > 5) throw new BuildfleetError('network', `registry ${this.endpoint.host} redirected ${req.method} ${new URL(req.url, this.endpoint.origin).pathname} ${location ? 'too often' : 'without a Location'}`);
        url = new URL(location, url).toString();
        if (status === 303) method = 'GET';
        continue;
      }
      if (status >= 500 || status === 429) {
        const text = await readText(res.body, 4096).catch(() => '');
        const { message } = registryMessage(text);
        throw new RetryableStatusError(status, parseRetryAfter(res.headers['retry-after']), `${statusText(status)} to ${method} ${new URL(url).pathname}${message ? `: ${message}` : ''}`);
      }
      return { status, headers: res.headers, body: res.body, url };
    }
  }

  /**
   * send + handle under the retry policy; what escapes is one BuildfleetError line.
   * `handle` reads (or takes) the response body and may throw (a BuildfleetError is final).
   */
  async call<T>(req: HttpRequest | (() => HttpRequest), ctx: ErrorContext, handle: (res: HttpResponse) => Promise<T>): Promise<T> {
    let attempts = 0;
    try {
      return await withRetry(async () => {
        attempts++;
        const res = await this.send(typeof req === 'function' ? req() : req);
        try {
          return await handle(res);
        } catch (err) {
          await res.body.dump().catch(() => undefined);
          throw err;
        }
      }, this.policy);
    } catch (err) {
      throw finalError(err, ctx, attempts);
    }
  }

  /** The final 401/403 of an operation as an 'auth' error; drains the body. */
  async authError(res: HttpResponse, repo: string | undefined, access: string): Promise<BuildfleetError> {
    const body = await readText(res.body, 4096).catch(() => '');
    return this.auth.failure(res.status, body, repo, access);
  }

  private readonly tokenFetch: TokenFetch = async (tokenRequest) => {
    const origin = new URL(tokenRequest.url).origin;
    let attempts = 0;
    try {
      return await withRetry(async () => {
        attempts++;
        const res = await this.raw(tokenRequest.method, tokenRequest.url, {
          headers: tokenRequest.headers,
          ...(tokenRequest.body !== undefined && { body: tokenRequest.body }),
        });
        const body = await readText(res.body, 1 << 20);
        if (res.statusCode >= 500 || res.statusCode === 429) {
          throw new RetryableStatusError(res.statusCode, parseRetryAfter(res.headers['retry-after']), `${statusText(res.statusCode)}: ${oneLine(body, 120)}`);
        }
        return { status: res.statusCode, body };
      }, this.policy);
    } catch (err) {
      throw finalError(err, { host: origin, what: `token request for registry ${this.endpoint.host}`, noun: 'token service' }, attempts);
    }
  };
}

/** Reads a body as text, refusing more than `limit` bytes. */
export async function readText(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  return (await readBytes(body, limit, 'response')).toString('utf8');
}

export async function readBytes(body: AsyncIterable<Buffer>, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new BuildfleetError('format', `${what} is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
