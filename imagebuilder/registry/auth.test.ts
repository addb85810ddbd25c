import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { RegistryServer } from '../../daemons/index.js';
import { MediaType } from '../oci/media-types.js';
import { parseChallenges, RegistryClient, type RegistryOptions } from './index.js';
import { htpasswdAuth, makeTempDir, TokenService, tinyImage, writeHtpasswd } from '../../test/helpers/registry-fakes.js';
import { errorOf } from '../../test/helpers/assertions.js';

// Needs the docker-registry package (distribution 2.8) and the openssl CLI; .ci/run installs them.
type Seen = { method: string; url: string; status: number };

const from = (data: Buffer) => async () => Readable.from([data]);

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Pushes a tiny image to host/repo and pulls it back; returns what onRequest saw. */
async function pushAndPull(host: string, repo: string, options: RegistryOptions, seed = repo): Promise<Seen[]> {
  const seen: Seen[] = [];
  const c = new RegistryClient(host, { retryBaseDelayMs: 10, ...options, onRequest: (info) => seen.push(info) });
  try {
    const image = tinyImage(seed);
    await c.uploadBlob(repo, from(image.layer), { digest: image.layerDigest });
    await c.uploadBlob(repo, from(image.config), { digest: image.configDigest });
    assert.equal(await c.putManifest(repo, 'v1', image.manifest, MediaType.ociManifest), image.manifestDigest);
    const got = await c.getManifest(repo, 'v1');
    assert.equal(got.digest, image.manifestDigest);
    assert.deepEqual(await readAll(await c.getBlob(repo, { digest: image.layerDigest, size: image.layer.length })), image.layer);
    return seen;
  } finally {
    await c.close();
  }
}

test('WWW-Authenticate challenges parse, quoted commas included', () => {
  assert.deepEqual(parseChallenges('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push', error: 'insufficient_scope' } },
  ]);
  assert.deepEqual(parseChallenges(['Basic realm="x"', 'Bearer realm="y"']), [
    { scheme: 'basic', params: { realm: 'x' } },
    { scheme: 'bearer', params: { realm: 'y' } },
  ]);
  assert.deepEqual(parseChallenges('Basic realm=plain, Bearer realm="r",service=s'), [
    { scheme: 'basic', params: { realm: 'plain' } },
    { scheme: 'bearer', params: { realm: 'r', service: 's' } },
  ]);
});

test('Basic auth against a real htpasswd registry: options, config.json auths, a credential helper; wrong credentials fail in one line', { timeout: 60_000 }, async () => {
  const temp = await makeTempDir();
  const savedPath = process.env.PATH;
  const savedDockerConfig = process.env.DOCKER_CONFIG;
  let registry: RegistryServer | undefined;
  try {
    const htpasswd = await writeHtpasswd(join(temp.path, 'htpasswd'), { alice: 's3cret pass' });
    registry = await RegistryServer.start({ auth: htpasswdAuth(htpasswd) });
    const host = registry.host;

    // Explicit credentials: anonymous first, one 401, then Basic on every request.
    const seen = await pushAndPull(host, 'team/app', { credentials: { username: 'alice', password: 's3cret pass' } });
    assert.equal(seen[0]!.status, 401);
    assert.equal(seen.filter((s) => s.status === 401).length, 1, 'the challenge is remembered');

    // Wrong password and no credentials at all.
    const wrong = new RegistryClient(host, { credentials: { username: 'alice', password: 'nope' }, retryBaseDelayMs: 10 });
    await assert.rejects(wrong.getManifest('team/app', 'v1'), errorOf('auth', new RegExp(`^registry ${host} refused the credentials for user alice \\(repository team/app\\)`)));
    await assert.rejects(wrong.uploadBlob('team/app', from(Buffer.from('x'))), errorOf('auth', /refused the credentials for user alice/));
    await wrong.close();
    const emptyConfig = join(temp.path, 'empty.json');
    await writeFile(emptyConfig, '{}');
    const anonymous = new RegistryClient(host, { authFile: emptyConfig });
    await assert.rejects(anonymous.ping(), errorOf('auth', new RegExp(`^registry ${host} requires authentication .* no credentials were found for ${host}`)));
    await anonymous.close();

    // config.json with an inline auth (base64 user:password), found through $DOCKER_CONFIG.
    const dockerDir = join(temp.path, 'docker');
    await mkdir(dockerDir);
    await writeFile(join(dockerDir, 'config.json'), JSON.stringify({ auths: { [`http://${host}`]: { auth: Buffer.from('alice:s3cret pass').toString('base64') } } }));
    process.env.DOCKER_CONFIG = dockerDir;
    await pushAndPull(host, 'team/from-config', {});

    // config.json naming a credential helper: docker-credential-test on PATH, host on stdin.
    const bin = join(temp.path, 'bin');
    await mkdir(bin);
    const helperLog = join(temp.path, 'helper.log');
    await writeFile(
      join(bin, 'docker-credential-test'),
      [
        '#!/bin/sh',
        'read -r server',
        `echo "$1 $server" >> '${helperLog}'`,
        `if [ "$1" = get ] && [ "$server" = '${host}' ]; then`,
        `  printf '{"ServerURL":"%s","Username":"alice","Secret":"s3cret pass"}' "$server"`,
        'else echo "credentials not found in native keychain"; exit 1; fi',
      ].join('\n') + '\n',
    );
    await chmod(join(bin, 'docker-credential-test'), 0o755);
    process.env.PATH = `${bin}:${savedPath}`;
    const helperConfig = join(temp.path, 'helper.json');
    await writeFile(helperConfig, JSON.stringify({ credHelpers: { [host]: 'test' }, auths: { [host]: { auth: Buffer.from('alice:wrong').toString('base64') } } }));
    await pushAndPull(host, 'team/from-helper', { authFile: helperConfig });
    assert.equal((await readFile(helperLog, 'utf8')).trim(), `get ${host}`, 'asked once, with the host');
  } finally {
    process.env.PATH = savedPath;
    if (savedDockerConfig === undefined) delete process.env.DOCKER_CONFIG;
    else process.env.DOCKER_CONFIG = savedDockerConfig;
    await registry?.stop();
    await temp.remove();
  }
});

test('a blob redirect is followed without our Authorization on the other origin', { timeout: 60_000 }, async () => {
  const temp = await makeTempDir();
  let registry: RegistryServer | undefined;
  const storageSaw: Array<string | undefined> = [];
  const image = tinyImage('redirect');
  // "Storage": another origin that serves the layer bytes.
  const storage = createServer((req, res) => {
    storageSaw.push(req.headers.authorization);
    res.writeHead(200, { 'content-length': image.layer.length });
    res.end(image.layer);
  });
  let front: ReturnType<typeof createServer> | undefined;
  try {
    registry = await RegistryServer.start({ auth: htpasswdAuth(await writeHtpasswd(join(temp.path, 'htpasswd'), { bob: 'pw' })) });
    const registryPort = registry.port;
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
    const storagePort = (storage.address() as AddressInfo).port;
    // The registry's front door: authenticated blob GETs redirect to storage, the rest passes through.
    const frontSaw: Array<string | undefined> = [];
    front = createServer((req, res) => {
      if (req.method === 'GET' && req.url?.includes('/blobs/sha256:') && req.headers.authorization) {
        frontSaw.push(req.headers.authorization);
        res.writeHead(307, { location: `http://127.0.0.1:${storagePort}/blobs/${image.layerDigest}?signature=x` });
        res.end();
        return;
      }
      const upstream = httpRequest({ host: '127.0.0.1', port: registryPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => front!.listen(0, '127.0.0.1', resolve));
    const frontHost = `127.0.0.1:${(front.address() as AddressInfo).port}`;
    const c = new RegistryClient(frontHost, { credentials: { username: 'bob', password: 'pw' } });
    try {
      const blob = await readAll(await c.getBlob('team/app', { digest: image.layerDigest, size: image.layer.length }));
      assert.deepEqual(blob, image.layer);
    } finally {
      await c.close();
    }
    assert.equal(frontSaw.length, 1, 'the registry got our credentials');
    assert.deepEqual(storageSaw, [undefined], 'storage did not');
  } finally {
    front?.closeAllConnections();
    await new Promise((resolve) => (front ? front.close(resolve) : resolve(undefined)));
    storage.closeAllConnections();
    await new Promise((resolve) => storage.close(resolve));
    await registry?.stop();
    await temp.remove();
  }
});

test('Bearer token flow against a real token-auth registry: scopes, caching, mount, identity token, refusals', { timeout: 60_000 }, async () => {
  const temp = await makeTempDir();
  const savedPath = process.env.PATH;
  let tokens: TokenService | undefined;
  let registry: RegistryServer | undefined;
  try {
    tokens = await TokenService.start(temp.path, { users: { alice: 'wonder' }, refreshTokens: { 'refresh-for-alice': 'alice' } });
    registry = await RegistryServer.start({ auth: tokens.registryAuth });
    const host = registry.host;

    const seen = await pushAndPull(host, 'team/base', { credentials: { username: 'alice', password: 'wonder' } });
    assert.equal(seen[0]!.status, 401, 'anonymous first');
    const scopeSets = tokens.requests.map((r) => r.scopes.join(' '));
    assert.deepEqual([...new Set(scopeSets)].sort(), ['repository:team/base:pull', 'repository:team/base:pull,push']);
    assert.equal(tokens.requests.length, 2, 'one token per scope set, cached');
    assert.ok(tokens.requests.every((r) => r.user === 'alice' && r.service === tokens!.service && r.method === 'GET'));

    // Cross-repository mount asks for push on the target and pull on the source.
    tokens.requests.length = 0;
    const mountSeen: Seen[] = [];
    const c = new RegistryClient(host, { credentials: { username: 'alice', password: 'wonder' }, onRequest: (i) => mountSeen.push(i) });
    const image = tinyImage('team/base');
    assert.equal(await c.mountBlob('team/app', image.layerDigest, 'team/base'), true);
    assert.equal(await c.hasBlob('team/app', image.layerDigest), image.layer.length);
    await c.close();
    assert.deepEqual(tokens.requests.map((r) => r.scopes), [['repository:team/app:pull,push', 'repository:team/base:pull'], ['repository:team/app:pull']]);
    assert.equal(mountSeen.filter((s) => s.method === 'PATCH').length, 0);

    // Wrong password: the token service refuses; anonymous: the registry does.
    const wrong = new RegistryClient(host, { credentials: { username: 'alice', password: 'nope' }, retryBaseDelayMs: 10 });
    await assert.rejects(wrong.getManifest('team/base', 'v1'), errorOf('auth', new RegExp(`^registry ${host} refused the credentials for user alice \\(token service http://127\\.0\\.0\\.1:\\d+: invalid username or password\\)`)));
    await wrong.close();
    const emptyConfig = join(temp.path, 'empty.json');
    await writeFile(emptyConfig, '{}');
    const anonymous = new RegistryClient(host, { authFile: emptyConfig });
    await assert.rejects(anonymous.getManifest('team/base', 'v1'), errorOf('auth', /requires authentication for repository team\/base and no credentials were found/));
    await anonymous.close();

    // An identity token from a credential helper (Username "<token>") goes through the OAuth2 refresh_token grant.
    const bin = join(temp.path, 'bin');
    await mkdir(bin);
    await writeFile(join(bin, 'docker-credential-idtoken'), `#!/bin/sh\nread -r server\nprintf '{"Username":"<token>","Secret":"refresh-for-alice"}'\n`);
    await chmod(join(bin, 'docker-credential-idtoken'), 0o755);
    process.env.PATH = `${bin}:${savedPath}`;
    const config = join(temp.path, 'config.json');
    await writeFile(config, JSON.stringify({ credsStore: 'idtoken' }));
    tokens.requests.length = 0;
    await pushAndPull(host, 'team/oauth', { authFile: config });
    assert.ok(tokens.requests.length >= 1);
    assert.ok(tokens.requests.every((r) => r.method === 'POST' && r.grant === 'refresh_token' && r.user === 'alice'), JSON.stringify(tokens.requests));
  } finally {
    process.env.PATH = savedPath;
    await registry?.stop();
    await tokens?.stop();
    await temp.remove();
  }
});
