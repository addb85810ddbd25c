import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { DockerEngine, type RegistryServer } from '../nodepool/daemons/index.js';
import { ensureMachineSetup, repoRoot, startEngine, startRegistry, tempDir } from '../test/helpers/real.js';
import type { ImageBuildReport } from '../imagebuilder/pipeline/build-and-push.js';

// The scripts the Jenkinsfile and the workflow call, end to end on real components (root):
// build ci/build-image on a Docker Engine -> squash -> push to a registry -> a cold engine
// pulls the image by digest and a container sees the files the Dockerfile made.
let builder: DockerEngine;
let cold: DockerEngine;
let registry: RegistryServer;
let work: { path: string; remove(): Promise<void> };

before(async () => {
  await ensureMachineSetup();
  work = await tempDir('buildfleet-ci-');
  [builder, cold, registry] = await Promise.all([startEngine(), DockerEngine.start(), startRegistry()]);
}, { timeout: 120_000 });

after(async () => {
  await Promise.allSettled([builder?.stop(), cold?.stop(), registry?.stop()]);
  await work?.remove();
});

// This checkout's sources, whatever `buildfleet` or dist/ the machine has (the script's own fallback when BUILDFLEET is unset).
const buildfleet = `${process.execPath} --import file://${join(repoRoot, 'node_modules', 'tsx', 'dist', 'loader.mjs')} ${join(repoRoot, 'cli', 'main.cts')}`;

test('ci/build-and-push.sh builds, squashes and pushes ci/build-image; a cold engine runs it and sees the Dockerfile\'s files', { timeout: 240_000 }, async () => {
  const image = `${registry.host}/ci/build-image:42`;
  const result = await execa('bash', [join(repoRoot, 'ci', 'build-and-push.sh'), image, join(repoRoot, 'ci', 'build-image')], {
    cwd: work.path,
    env: { DOCKER_HOST: builder.host, BUILDFLEET: buildfleet, BUILD_NETWORK: 'none', BUILD_ARGS: 'FILES=40 KB=128', CI: 'true' },
    reject: false,
  });
  assert.equal(result.exitCode, 0, result.stderr);
  assert.match(result.stderr, /^Step 2\/\d+ : FROM \$\{BASE\}$/m, 'the build log streams to stderr');

  const report = JSON.parse(await readFile(join(work.path, 'build-report.json'), 'utf8')) as ImageBuildReport;
  process.stderr.write(`phases (ms): ${JSON.stringify(report.phasesMs)}\n`);
  const ref = (await readFile(join(work.path, 'build-image.ref'), 'utf8')).trim();
  assert.equal(ref, `${registry.host}/ci/build-image@${report.result!.manifestDigest}`);
  assert.equal(result.stdout.trim().split('\n').at(-1), ref, 'the last stdout line is the pushed digest reference');
  assert.equal(report.result!.layers, 1);
  assert.equal(report.result!.pushed, true);
  assert.ok(report.source.layers >= 9, `the layered build has many layers (${report.source.layers})`);
  assert.ok(report.squash!.shadowedBytes > 128 * 1024 * 4, 'the deleted cache, runtime and copied-up files are gone');
  for (const phase of ['build', 'export', 'squash', 'total'] as const) assert.ok(report.phasesMs[phase] > 0, `phase ${phase} timed`);

  // The tag names what the report says.
  const head = await request(`${registry.url}/v2/ci/build-image/manifests/42`, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(head.headers['docker-content-digest'], report.result!.manifestDigest);

  // A fresh engine pulls it by digest and runs it.
  const pullStarted = Date.now();
  await cold.cli(['pull', ref]);
  const check = [
    'cat /etc/build-image-release',
    'ls /opt',
    'test ! -e /opt/java/17 && echo java17-removed',
    'test ! -e /opt/ruby/3.3/share && echo ruby-share-removed',
    'test ! -e /var/cache/pkg && echo cache-removed',
    'stat -c "%u %a" /opt/python/3.12/bin/main',
    'ls /opt/go/1.22/lib',
    'ls /opt/node/20/lib/d0 | wc -l',
    'ls /opt/ci',
    'pwd',
  ].join('; ');
  process.stderr.write(`pull + run: ${Date.now() - pullStarted} ms\n`);
  const run = await cold.cli(['run', '--rm', '--network', 'none', ref, 'sh', '-c', check]);
  assert.deepEqual(run.stdout.trim().split('\n'), [
    'runtimes: ci go java node python ruby',
    'ci', 'go', 'java', 'node', 'python', 'ruby',
    'java17-removed',
    'ruby-share-removed',
    'cache-removed',
    '1000 755',
    'STAMP',
    '40',
    // COPY . /opt/ci: the context minus what .dockerignore leaves out (README.md).
    '.dockerignore', 'Dockerfile', 'bin',
    '/work',
  ].filter((line) => line !== '.dockerignore'), run.stdout);
});

test('ci/roll-pool.sh calls `buildfleet pool roll POOL --image REF` with the extra arguments', { timeout: 30_000 }, async () => {
  const fake = join(work.path, 'fake-buildfleet.sh');
  await writeFile(fake, '#!/bin/sh\nprintf "%s\\n" "$@"\n');
  await chmod(fake, 0o755);
  const result = await execa('bash', [join(repoRoot, 'ci', 'roll-pool.sh'), 'builders', 'reg.example/ci/build-image@sha256:abc'], {
    env: { BUILDFLEET: fake, POOL_ARGS: '--provider gke --json' },
  });
  assert.deepEqual(result.stdout.split('\n'), ['pool', 'roll', 'builders', '--image', 'reg.example/ci/build-image@sha256:abc', '--provider', 'gke', '--json']);
  const usage = await execa('bash', [join(repoRoot, 'ci', 'roll-pool.sh'), 'only-one'], { reject: false });
  assert.equal(usage.exitCode, 2);
});
