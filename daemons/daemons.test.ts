import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { request } from 'undici';
import { DockerEngine, RegistryServer, importBusyboxBase } from './index.js';

// Needs root and the docker.io / docker-registry / busybox-static packages (.ci/run installs them).
test('a real Docker Engine starts, runs a container of the local base image and stops clean', { timeout: 120_000 }, async () => {
  const engine = await DockerEngine.start();
  try {
    await importBusyboxBase(engine.docker, 'base:test');
    const { stdout } = await engine.cli(['run', '--rm', '--network', 'none', 'base:test', 'sh', '-c', 'echo hello from $(cat /etc/passwd | head -1 | cut -d: -f1 2>/dev/null || echo root)']);
    assert.match(stdout, /hello from/);
  } finally {
    await engine.stop();
  }
  assert.equal(existsSync(engine.root), false, 'engine root removed');
  assert.equal(existsSync(engine.socketPath), false);
});

test('a real registry answers /v2/ on loopback and stops clean', { timeout: 60_000 }, async () => {
  const registry = await RegistryServer.start();
  try {
    const res = await request(`${registry.url}/v2/`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    await res.body.dump();
  } finally {
    await registry.stop();
  }
  await assert.rejects(request(`${registry.url}/v2/`), /ECONNREFUSED/);
});
