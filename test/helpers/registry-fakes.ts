/**
 * Test helpers for the registry client: an htpasswd file, a fault-injecting proxy in front of
 * a real registry, and a small token service that issues the RS256 JWTs distribution accepts.
 * Everything listens on 127.0.0.1 only.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes, sign } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import bcrypt from 'bcryptjs';
import { execa } from 'execa';
import tar from 'tar-stream';
import type { RegistryAuthConfig } from '../../nodepool/daemons/index.js';
import { tempDir } from '../../bench/harness.js';

export function makeTempDir(prefix = 'buildfleet-regtest-'): Promise<{ path: string; remove: () => Promise<void> }> {
  return tempDir(prefix);
}

/** An htpasswd file with bcrypt hashes ($2y$, the prefix Apache's htpasswd writes). */
export async function writeHtpasswd(path: string, users: Record<string, string>): Promise<string> {
  const lines = Object.entries(users).map(([user, password]) => `${user}:${bcrypt.hashSync(password, 5).replace(/^\$2b\$/, '$2y$')}`);
  await writeFile(path, lines.join('\n') + '\n');
  return path;
}

/** The RegistryServer auth section for Basic auth against an htpasswd file. */
export function htpasswdAuth(file: string, realm = 'buildfleet'): RegistryAuthConfig {
  return { htpasswd: { realm, path: file } };
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

async function shut(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/**
 * What an injected fault does: answer with an error status, reset the connection, or pass the
 * registry's answer on but break the connection after `cutAfter` body bytes (a download that
 * breaks), or with the byte at `corruptAt` flipped (a blob that does not match its digest).
 */
export type Fault = { status: number; retryAfter?: number } | 'reset' | { cutAfter: number } | { corruptAt: number };
type FaultRule = { fault: Fault; remaining: number; match: (method: string, url: string) => boolean };
type HeaderRewrite = { name: string; value: string; match: (method: string, url: string) => boolean };

/**
 * An HTTP proxy in front of a real registry that fails chosen requests: an error status
 * (503, 429 with Retry-After) or a connection reset. The Host header passes through, so the
 * registry's upload Locations point back at the proxy.
 */
export class FaultProxy {
  readonly log: Array<{ method: string; url: string; fault?: string; contentRange?: string; range?: string; authorization?: string }> = [];
  private readonly rules: FaultRule[] = [];
  private readonly rewrites: HeaderRewrite[] = [];
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<FaultProxy> {
    let proxy: FaultProxy | undefined;
    const server = createServer((req, res) => proxy!.handle(req, res, targetPort));
    const port = await listen(server);
    proxy = new FaultProxy(server, port);
    return proxy;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Fails the next `times` requests that `match` (default: all) with `fault`. */
  inject(fault: Fault, times: number, match: (method: string, url: string) => boolean = () => true): void {
    this.rules.push({ fault, remaining: times, match });
  }

  /** Drops every fault still to come: the registry answers normally again. */
  clearFaults(): void {
    this.rules.length = 0;
  }

  /** Sets response header `name` to `value` on every answer to a request that `match`es (a lying registry or cache). */
  rewriteResponseHeader(name: string, value: string, match: (method: string, url: string) => boolean): void {
    this.rewrites.push({ name: name.toLowerCase(), value, match });
  }

  private handle(req: IncomingMessage, res: ServerResponse, targetPort: number): void {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const rule = this.rules.find((r) => r.remaining > 0 && r.match(method, url));
    const fault = rule?.fault;
    if (rule && fault && (fault === 'reset' || 'status' in fault)) {
      rule.remaining--;
      this.log.push({ method, url, fault: fault === 'reset' ? 'reset' : String(fault.status) });
      if (fault === 'reset') {
        req.socket.resetAndDestroy();
        return;
      }
      req.resume();
      const body = JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: `injected ${fault.status}` }] });
      res.writeHead(fault.status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        ...(fault.retryAfter !== undefined && { 'retry-after': String(fault.retryAfter) }),
      });
      res.end(body);
      return;
    }
    const passing = rule && fault && typeof fault === 'object' && !('status' in fault) ? fault : undefined;
    if (rule && passing) rule.remaining--;
    this.log.push({
      method,
      url,
      ...(passing && { fault: 'cutAfter' in passing ? `cut after ${passing.cutAfter}` : `corrupt at ${passing.corruptAt}` }),
      ...(req.headers.range !== undefined && { range: req.headers.range }),
      ...(req.headers['content-range'] !== undefined && { contentRange: req.headers['content-range'] }),
      ...(req.headers.authorization !== undefined && { authorization: req.headers.authorization }),
    });
    const upstream = httpRequest({ host: '127.0.0.1', port: targetPort, method, path: url, headers: req.headers }, (answer) => {
      const headers = { ...answer.headers };
      for (const rewrite of this.rewrites) if (rewrite.match(method, url)) headers[rewrite.name] = rewrite.value;
      res.writeHead(answer.statusCode ?? 502, headers);
      if (!passing) {
        answer.pipe(res);
        return;
      }
      let seen = 0;
      answer.on('data', (chunk: Buffer) => {
        const start = seen;
        seen += chunk.length;
        if ('cutAfter' in passing) {
          if (seen <= passing.cutAfter) res.write(chunk);
          else {
            res.write(chunk.subarray(0, Math.max(0, passing.cutAfter - start)), () => res.socket?.resetAndDestroy());
            answer.destroy();
          }
          return;
        }
        const at = passing.corruptAt - start;
        if (at >= 0 && at < chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[at] = chunk[at]! ^ 0xff;
        }
        res.write(chunk);
      });
      answer.on('end', () => res.end());
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  }

  async stop(): Promise<void> {
    await shut(this.server);
  }
}

export type TokenRequest = { method: string; scopes: string[]; user?: string; grant?: string; service?: string };

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

/**
 * A token service of the kind distribution's `auth: token` expects: Basic credentials (or an
 * OAuth2 refresh_token) in, an RS256 JWT out, signed by a key whose self-signed certificate is
 * both the registry's rootcertbundle and the token's x5c header. Grants every requested action
 * to known users, nothing to anonymous callers.
 */
export class TokenService {
  readonly requests: TokenRequest[] = [];
  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly certFile: string,
    private readonly keyPem: string,
    private readonly certDer: string,
    readonly service: string,
    readonly issuer: string,
    private readonly users: Record<string, string>,
    private readonly refreshTokens: Record<string, string>,
  ) {}

  /** Makes an RSA key and a self-signed certificate with the openssl CLI in `dir`. */
  static async start(dir: string, options: { users: Record<string, string>; refreshTokens?: Record<string, string>; service?: string; issuer?: string }): Promise<TokenService> {
    const keyFile = join(dir, 'token.key');
    const certFile = join(dir, 'token.crt');
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=buildfleet test token issuer']);
    const keyPem = await readFile(keyFile, 'utf8');
    const certPem = await readFile(certFile, 'utf8');
    const certDer = certPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    let service: TokenService | undefined;
    const server = createServer((req, res) => service!.handle(req, res));
    const port = await listen(server);
    service = new TokenService(server, port, certFile, keyPem, certDer, options.service ?? 'buildfleet-test-registry', options.issuer ?? 'buildfleet-test-issuer', options.users, options.refreshTokens ?? {});
    return service;
  }

  get realm(): string {
    return `http://127.0.0.1:${this.port}/token`;
  }

  /** The RegistryServer auth section that points a registry at this service. */
  get registryAuth(): RegistryAuthConfig {
    return { token: { realm: this.realm, service: this.service, issuer: this.issuer, rootcertbundle: this.certFile } };
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', this.realm);
      let user: string | undefined;
      let scopes: string[];
      let service: string | null;
      let grant: string | undefined;
      const reply = (status: number, body: object) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'POST') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        grant = form.get('grant_type') ?? undefined;
        scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
        service = form.get('service');
        user = this.refreshTokens[form.get('refresh_token') ?? ''];
        this.requests.push({ method: 'POST', scopes, ...(user !== undefined && { user }), ...(grant !== undefined && { grant }), ...(service !== null && { service }) });
        if (grant !== 'refresh_token' || !user) return reply(401, { error: 'invalid_grant' });
      } else {
        scopes = url.searchParams.getAll('scope');
        service = url.searchParams.get('service');
        const authorization = req.headers.authorization;
        if (authorization?.startsWith('Basic ')) {
          const [name, ...rest] = Buffer.from(authorization.slice(6), 'base64').toString('utf8').split(':');
          this.requests.push({ method: 'GET', scopes, ...(name !== undefined && { user: name }), ...(service !== null && { service }) });
          if (!name || this.users[name] !== rest.join(':')) {
            return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] });
          }
          user = name;
        } else {
          this.requests.push({ method: 'GET', scopes, ...(service !== null && { service }) });
        }
      }
      const access = user
        ? scopes.map((scope) => {
            const [type, ...rest] = scope.split(':');
            const actions = (rest.pop() ?? '').split(',').filter(Boolean);
            return { type, name: rest.join(':'), actions };
          })
        : [];
      const token = this.issue(user ?? '', access);
      const issuedAt = new Date().toISOString();
      reply(200, req.method === 'POST' ? { access_token: token, expires_in: 300, issued_at: issuedAt } : { token, expires_in: 300, issued_at: issuedAt });
    });
  }

  private issue(subject: string, access: Array<{ type: string | undefined; name: string; actions: string[] }>): string {
    const now = Math.floor(Date.now() / 1000);
    const headerPart = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [this.certDer] }));
    const claims = { iss: this.issuer, sub: subject, aud: this.service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const payloadPart = b64url(JSON.stringify(claims));
    const signature = sign('sha256', Buffer.from(`${headerPart}.${payloadPart}`), this.keyPem);
    return `${headerPart}.${payloadPart}.${b64url(signature)}`;
  }

  async stop(): Promise<void> {
    await shut(this.server);
  }
}

/**
 * A tiny OCI image (config + one layer) as blobs and manifest bytes, for push/pull tests. The
 * default layer is opaque bytes; give a real tar (`pushRunnableTinyImage`) for a runtime to unpack.
 */
export function tinyImage(seed: string, platform: { os: string; architecture: string } = { os: 'linux', architecture: 'amd64' }, layer = Buffer.from(`layer bytes of ${seed} `.repeat(64))) {
  const sha = (data: Buffer) => `sha256:${createHashHex(data)}`;
  const config = Buffer.from(
    JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: [sha(layer)] }, config: { Env: [`SEED=${seed}`] }, history: [{ created_by: seed }] }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
    }),
  );
  return { layer, config, manifest, layerDigest: sha(layer), configDigest: sha(config), manifestDigest: sha(manifest) };
}

/**
 * A tiny image a runtime can pull and unpack (one real tar layer holding hello.txt), pushed to
 * a registry over the distribution API. Returns its digest reference.
 */
export async function pushRunnableTinyImage(registryUrl: string, repository: string, tag: string): Promise<{ reference: string; digest: string }> {
  const pack = tar.pack();
  pack.entry({ name: 'hello.txt', mode: 0o644 }, `hello from ${repository}:${tag}\n`);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const image = tinyImage(`${repository}:${tag}`, { os: 'linux', architecture: 'amd64' }, Buffer.concat(chunks));
  for (const [blob, digest] of [[image.layer, image.layerDigest], [image.config, image.configDigest]] as const) {
    const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`start upload: HTTP ${start.status}`);
    const location = new URL(start.headers.get('location')!, registryUrl);
    location.searchParams.set('digest', digest);
    const put = await fetch(location, { method: 'PUT', body: blob, headers: { 'content-type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`upload ${digest}: HTTP ${put.status}`);
  }
  const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, { method: 'PUT', body: image.manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
  if (put.status !== 201) throw new Error(`put manifest: HTTP ${put.status}: ${await put.text()}`);
  return { reference: `${new URL(registryUrl).host}/${repository}@${image.manifestDigest}`, digest: image.manifestDigest };
}

function createHashHex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
