import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { DockerEngine, RegistryServer } from '../../daemons/index.js';
import { dockerBuild, runCli, startEngine, startRegistry, tempDir, BASE_IMAGE } from '../../test/helpers/real.js';
import { openDestination, openSource } from '../transports/index.js';
import { copyImage } from './copy.js';
import { inspectImage, type ImageSummary } from './inspect.js';

// Real Docker Engine 20.10 and real registry (root; .ci/run installs docker.io and docker-registry).
let engine: DockerEngine;
let registry: RegistryServer;
let work: { path: string; remove(): Promise<void> };

const dockerfile = `FROM ${BASE_IMAGE}
RUN mkdir -p /opt/tool/bin && echo 'echo tool v1' > /opt/tool/bin/run && chmod 755 /opt/tool/bin/run && echo gone > /opt/tool/old
RUN rm /opt/tool/old && ln -s /opt/tool/bin/run /usr-run && dd if=/dev/zero of=/opt/blob bs=1k count=300 2>/dev/null
COPY hello.txt /srv/hello.txt
ENV TOOL_HOME=/opt/tool LANG=C.UTF-8
WORKDIR /srv
LABEL org.example.team=ci
EXPOSE 8080
CMD ["sh", "-c", "cat hello.txt; /usr-run; ls /opt/tool; echo $TOOL_HOME"]
`;

before(async () => {
  [engine, registry, work] = await Promise.all([startEngine(), startRegistry(), tempDir()]);
  await dockerBuild(engine, 'roundtrip:v1', dockerfile, { 'hello.txt': 'hello from the build context\n' });
}, { timeout: 180_000 });

after(async () => {
  await Promise.allSettled([engine?.stop(), registry?.stop(), work?.remove()]);
});

function sameImage(actual: ImageSummary, expected: ImageSummary): void {
  assert.deepEqual(actual.layers.map((layer) => layer.diffId), expected.layers.map((layer) => layer.diffId), 'diff_ids');
  assert.deepEqual(actual.config, expected.config, 'runtime config');
  assert.equal(actual.platform, expected.platform);
}

test('docker-daemon -> registry -> oci -> docker-archive -> docker-daemon keeps the image, and it runs', { timeout: 300_000 }, async () => {
  const env = { DOCKER_HOST: engine.host };
  const original = JSON.parse((await runCli(['--json', 'image', 'inspect', 'docker-daemon:roundtrip:v1'], env)).stdout) as ImageSummary;
  assert.equal(original.layers.length, 4, 'base + 3 layers');

  const hops = [
    ['docker-daemon:roundtrip:v1', `${registry.host}/ci/roundtrip:v1`],
    [`${registry.host}/ci/roundtrip:v1`, `oci:${join(work.path, 'layout')}:v1`],
    [`oci:${join(work.path, 'layout')}:v1`, `docker-archive:${join(work.path, 'image.tar')}:roundtrip:v1`],
  ];
  for (const [src, dst] of hops) {
    const copy = await runCli(['--json', 'image', 'copy', src!, dst!], env);
    assert.equal(copy.exitCode, 0, `copy ${src} -> ${dst}: ${copy.stderr}`);
    const inspected = await runCli(['--json', 'image', 'inspect', dst!], env);
    assert.equal(inspected.exitCode, 0, inspected.stderr);
    sameImage(JSON.parse(inspected.stdout) as ImageSummary, original);
  }

  // Back into the daemon under a new name, from the archive.
  await engine.cli(['rmi', 'roundtrip:v1']);
  const back = await runCli(['image', 'copy', `docker-archive:${join(work.path, 'image.tar')}`, 'docker-daemon:roundtrip:back'], env);
  assert.equal(back.exitCode, 0, back.stderr);
  const reloaded = JSON.parse((await runCli(['--json', 'image', 'inspect', 'docker-daemon:roundtrip:back'], env)).stdout) as ImageSummary;
  sameImage(reloaded, original);

  const { stdout } = await engine.cli(['run', '--rm', '--network', 'none', 'roundtrip:back']);
  assert.equal(stdout.trim().split('\n').join('|'), 'hello from the build context|tool v1|bin|/opt/tool');
});

test('copying an image the destination already has uploads no blob; same-registry copies mount', { timeout: 120_000 }, async () => {
  const requests: Array<{ method: string; url: string; status: number }> = [];
  const options = { registry: { onRequest: (info: { method: string; url: string; status: number }) => requests.push(info) }, docker: engine.docker };
  const copy = async (src: string, dst: string) => {
    const source = await openSource(src, options);
    try {
      return await copyImage(source, await openDestination(dst, options));
    } finally {
      await source.close();
    }
  };
  await copy('docker-daemon:roundtrip:back', `${registry.host}/skip/a:v1`);
  const uploadsFirst = requests.filter((r) => r.method === 'PATCH' || (r.method === 'PUT' && r.url.includes('/blobs/uploads/'))).length;
  assert.ok(uploadsFirst >= 5, `first copy uploads config + 4 layers (saw ${uploadsFirst})`);

  requests.length = 0;
  const again = await copy(`${registry.host}/skip/a:v1`, `${registry.host}/skip/a:v2`);
  assert.deepEqual(requests.filter((r) => r.method === 'PATCH' || r.method === 'POST'), [], 'no upload started for a repository that has every blob');
  assert.ok(again.layers.every((layer) => layer.action === 'present'));

  requests.length = 0;
  const mounted = await copy(`${registry.host}/skip/a:v1`, `${registry.host}/skip/other:v1`);
  assert.deepEqual(requests.filter((r) => r.method === 'PATCH'), [], 'cross-repository copy sends no blob bytes');
  assert.ok(requests.some((r) => r.method === 'POST' && r.url.includes('mount=')), 'blobs were mounted');
  assert.ok(mounted.layers.every((layer) => layer.action === 'present'));

  const summary = await inspectImage(await openSource(`${registry.host}/skip/other:v1`, options));
  assert.equal(summary.layers.length, 4);
});
