import { BuildfleetError } from '../errors.js';
import { describeCredentials, resolveCredentials, type Credentials } from './credentials.js';
import { oneLine, registryMessage } from './errors.js';
import type { Endpoint, RegistryOptions } from './options.js';

/**
 * Registry authentication as Docker does it: send anonymously; on 401 read WWW-Authenticate.
 * Basic: send the credentials with every request from then on. Bearer: get a token for the
 * request's scopes from the realm (Basic auth to it when there are credentials; an identity
 * token goes through the OAuth2 refresh_token grant) and cache it per scope set until it expires.
 */

export type Challenge = { scheme: string; params: Record<string, string> };

/** Parses `Bearer realm="x",service="y",scope="repository:a:pull,push"` (several challenges allowed). */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const text = Array.isArray(header) ? header.join(', ') : (header ?? '');
  const challenges: Challenge[] = [];
  let i = 0;
  const skip = (pattern: RegExp) => {
    while (i < text.length && pattern.test(text[i]!)) i++;
  };
  while (i < text.length) {
    skip(/[\s,]/);
    const schemeStart = i;
    skip(/[^\s,=]/);
    if (i === schemeStart) break;
    const scheme = text.slice(schemeStart, i);
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    for (;;) {
      skip(/[\s,]/);
      const mark = i;
      skip(/[^\s,=]/);
      const name = text.slice(mark, i);
      skip(/\s/);
      if (!name || text[i] !== '=') {
        i = mark; // the next challenge's scheme
        break;
      }
      i++;
      skip(/\s/);
      let value = '';
      if (text[i] === '"') {
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < text.length) i++;
          value += text[i++];
        }
        i++;
      } else {
        const start = i;
        skip(/[^\s,]/);
        value = text.slice(start, i);
      }
      challenge.params[name.toLowerCase()] = value;
    }
  }
  return challenges;
}

/** `repository:NAME:ACTIONS`; several scopes for one repository merge their actions. */
export function repositoryScope(repo: string, actions: string[]): string {
  return `repository:${repo}:${actions.join(',')}`;
}

/** Adds `extra` to `scopes` unless an equal or wider scope is already there. */
export function mergeScope(scopes: string[], extra: string | undefined): string[] {
  if (!extra) return scopes;
  const out = [...scopes];
  for (const scope of extra.split(' ').filter(Boolean)) {
    const [type, ...rest] = scope.split(':');
    const actions = (rest.pop() ?? '').split(',');
    const name = rest.join(':');
    const covered = out.some((have) => {
      const parts = have.split(':');
      const haveActions = (parts.pop() ?? '').split(',');
      return parts[0] === type && parts.slice(1).join(':') === name && actions.every((a) => haveActions.includes(a));
    });
    if (!covered) out.push(scope);
  }
  return out;
}

/** What the HTTP layer lends the authenticator to talk to a token service (with retries). */
export type TokenFetch = (request: {
  method: 'GET' | 'POST';
  url: string;
  headers: Record<string, string>;
  body?: string;
}) => Promise<{ status: number; body: string }>;

type CachedToken = { value: string; expiresAt: number };

export class Authenticator {
  private challenge: { scheme: 'basic' } | { scheme: 'bearer'; realm: string; service?: string } | undefined;
  private credentialsPromise: Promise<Credentials | undefined> | undefined;
  private readonly tokens = new Map<string, Promise<CachedToken>>();

  constructor(
    private readonly endpoint: Endpoint,
    private readonly options: RegistryOptions,
    private readonly fetchToken: TokenFetch,
  ) {}

  /** Looked up once, and only when a registry first asks: anonymous pulls never run a helper. */
  credentials(): Promise<Credentials | undefined> {
    this.credentialsPromise ??= resolveCredentials(this.endpoint, this.options);
    return this.credentialsPromise;
  }

  get scheme(): 'basic' | 'bearer' | undefined {
    return this.challenge?.scheme;
  }

  /** The Authorization header for a request needing `scopes`, once the registry has said how. */
  async header(scopes: string[]): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') {
      const credentials = await this.credentials();
      if (credentials?.kind !== 'basic') return undefined;
      return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
    }
    const key = [...scopes].sort().join(' ');
    const now = Date.now();
    let cached = this.tokens.get(key);
    if (cached) {
      const token = await cached.catch(() => undefined);
      if (!token || token.expiresAt <= now) {
        this.tokens.delete(key);
        cached = undefined;
      }
    }
    if (!cached) {
      cached = this.requestToken(challenge.realm, challenge.service, scopes);
      this.tokens.set(key, cached);
      cached.catch(() => this.tokens.delete(key));
    }
    return `Bearer ${(await cached).value}`;
  }

  /**
   * Learns from a 401. Returns the scopes to retry with, or undefined when another try cannot
   * help (no known scheme, or Basic credentials already refused, or none to send).
   */
  async unauthorized(wwwAuthenticate: string | string[] | undefined, scopes: string[], sent: string | undefined): Promise<string[] | undefined> {
    const challenges = parseChallenges(wwwAuthenticate);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) {
      this.challenge = { scheme: 'bearer', realm: bearer.params.realm!, ...(bearer.params.service !== undefined && { service: bearer.params.service }) };
      if (sent?.startsWith('Bearer ')) this.tokens.delete([...scopes].sort().join(' '));
      return mergeScope(scopes, bearer.params.scope);
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      const alreadySent = sent?.startsWith('Basic ');
      this.challenge = { scheme: 'basic' };
      const credentials = await this.credentials();
      if (alreadySent || credentials?.kind !== 'basic') return undefined;
      return scopes;
    }
    return undefined;
  }

  /** One line for a final 401/403, naming the registry, the repository and who we were. */
  async failure(status: number, body: string, repo: string | undefined, access: string): Promise<BuildfleetError> {
    const credentials = await this.credentials().catch(() => undefined);
    const who = describeCredentials(credentials);
    const { message } = registryMessage(body);
    const suffix = message ? `: ${message}` : '';
    const host = this.endpoint.host;
    const repoText = repo ? `repository ${repo}` : 'the registry';
    if (status === 403) return new BuildfleetError('auth', `registry ${host} denied ${access} access to ${repoText} ${who}${suffix}`);
    if (!credentials) {
      return new BuildfleetError('auth', `registry ${host} requires authentication for ${repoText} and no credentials were found for ${host} (log in, or pass credentials)${suffix}`);
    }
    if (this.challenge?.scheme === 'bearer') {
      return new BuildfleetError('auth', `registry ${host} did not grant ${access} access to ${repoText} ${who}${suffix}`);
    }
    if (this.challenge?.scheme === 'basic' && credentials.kind !== 'basic') {
      return new BuildfleetError('auth', `registry ${host} wants a user and password for ${repoText}, but only an identity token was found (${credentials.source})`);
    }
    return new BuildfleetError('auth', `registry ${host} refused the credentials ${who} (${repoText})${suffix}`);
  }

  private async requestToken(realm: string, service: string | undefined, scopes: string[]): Promise<CachedToken> {
    const credentials = await this.credentials();
    const host = this.endpoint.host;
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new BuildfleetError('auth', `registry ${host} names an invalid token realm "${oneLine(realm, 100)}"`);
    }
    let response: { status: number; body: string };
    if (credentials?.kind === 'identity-token') {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: credentials.token, client_id: 'buildfleet' });
      if (service) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      response = await this.fetchToken({
        method: 'POST',
        url: url.toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
      });
    } else {
      if (service) url.searchParams.set('service', service);
      for (const scope of scopes) url.searchParams.append('scope', scope);
      const headers: Record<string, string> = {};
      if (credentials) {
        url.searchParams.set('account', credentials.username);
        headers.authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
      }
      response = await this.fetchToken({ method: 'GET', url: url.toString(), headers });
    }
    const who = describeCredentials(credentials);
    if (response.status === 401 || response.status === 403) {
      const { message } = registryMessage(response.body);
      throw new BuildfleetError('auth', `registry ${host} refused the credentials ${who} (token service ${url.origin}${message ? `: ${message}` : ''})`);
    }
    if (response.status !== 200) {
      const { message } = registryMessage(response.body);
      throw new BuildfleetError('auth', `token service ${url.origin} of registry ${host} answered ${response.status}${message ? `: ${message}` : ''}`);
    }
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      parsed = JSON.parse(response.body);
    } catch {
      throw new BuildfleetError('auth', `token service ${url.origin} of registry ${host} did not answer JSON`);
    }
    const value = typeof parsed.token === 'string' && parsed.token ? parsed.token : parsed.access_token;
    if (typeof value !== 'string' || !value) throw new BuildfleetError('auth', `token service ${url.origin} of registry ${host} answered without a token`);
    // The spec's default lifetime is 60 s; renew a little early so a token does not lapse mid-request.
    const lifetime = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    const issued = typeof parsed.issued_at === 'string' ? Date.parse(parsed.issued_at) : NaN;
    const start = Number.isNaN(issued) || issued > Date.now() ? Date.now() : issued;
    return { value, expiresAt: start + lifetime * 1000 * 0.9 };
  }
}
