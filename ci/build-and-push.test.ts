import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { freePort, type DockerEngine, type RegistryServer } from '../nodepool/daemons/index.js';
import { PoolManager } from '../nodepool/pool.js';
import { parsePoolSpec } from '../nodepool/pool-spec/pool-spec.js';
import { StateStore } from '../nodepool/state/store.js';
import { ensureMachineSetup, repoRoot, runCli, startEngine, startRegistry, tempDir } from '../test/helpers/real.js';
import { htpasswdAuth, writeHtpasswd } from '../test/helpers/registry-fakes.js';
import { oneClearLine } from '../test/helpers/assertions.js';
import type { ImageBuildReport } from '../imagebuilder/pipeline/build-and-push.js';

// `image build` and the scripts the Jenkinsfile and the workflow call, on real components
// (Docker Engines, registries; root). End to end: build ci/build-image on an engine -> squash ->
// push -> a cold local node pre-pulls the image by digest and a build job on it sees the files the
// Dockerfile made. Then what a CI job gets back when its build cannot succeed (one line, the exit code,
// nothing pushed), and the paths around the push. One file so that the cases share the daemons
// and run side by side (they mostly wait on the engine).
let builder: DockerEngine;
let registry: RegistryServer;
let locked: RegistryServer;
let work: { path: string; remove(): Promise<void> };

const contexts: Record<string, Record<string, string>> = {
  fails: { Dockerfile: 'FROM buildfleet/busybox:latest\nRUN echo step two\nRUN false\nRUN echo never\n' },
  ok: { Dockerfile: 'FROM buildfleet/busybox:latest\nRUN echo hi > /hi\n' },
  stages: {
    Dockerfile: 'FROM buildfleet/busybox:latest AS first\nARG MSG\nRUN echo "$MSG" > /msg\nRUN mkdir -p /big && dd if=/dev/zero of=/big/junk bs=1024 count=256 2>/dev/null\nRUN rm -rf /big\n\nFROM first AS second\nRUN echo second > /second\n',
  },
  empty: { 'notes.txt': 'no Dockerfile here\n' },
};

before(async () => {
  await ensureMachineSetup();
  work = await tempDir('buildfleet-ci-');
  for (const [name, files] of Object.entries(contexts)) {
    await mkdir(join(work.path, name));
    for (const [file, content] of Object.entries(files)) await writeFile(join(work.path, name, file), content);
  }
  const htpasswd = await writeHtpasswd(join(work.path, 'htpasswd'), { alice: 's3cret' });
  [builder, registry, locked] = await Promise.all([startEngine(), startRegistry(), startRegistry({ auth: htpasswdAuth(htpasswd) })]);
}, { timeout: 120_000 });

after(async () => {
  await Promise.allSettled([builder?.stop(), registry?.stop(), locked?.stop()]);
  await work?.remove();
});

// This checkout's sources, whatever `buildfleet` or dist/ the machine has (the script's own fallback when BUILDFLEET is unset).
const buildfleet = `${process.execPath} --import file://${join(repoRoot, 'node_modules', 'tsx', 'dist', 'loader.mjs')} ${join(repoRoot, 'cli', 'main.cts')}`;

const build = (args: string[]) => runCli(['-q', 'image', 'build', '--network', 'none', ...args], { DOCKER_HOST: builder.host });

async function tagsOf(server: RegistryServer, repository: string, auth?: string): Promise<string[]> {
  const res = await request(`${server.url}/v2/${repository}/tags/list`, auth ? { headers: { authorization: `Basic ${Buffer.from(auth).toString('base64')}` } } : {});
  const body = (await res.body.json()) as { tags?: string[] | null };
  assert.notEqual(res.statusCode, 401, 'the tag list was readable');
  return res.statusCode === 200 ? (body.tags ?? []) : [];
}

async function engineHas(name: string): Promise<boolean> {
  return builder.docker.getImage(name).inspect().then(() => true, () => false);
}

describe('image build', { concurrency: true }, () => {
  test('ci/build-and-push.sh builds, squashes and pushes ci/build-image; a cold local node pre-pulls it and a job there sees the Dockerfile\'s files and Node.js from the node\'s toolchain cache', { timeout: 240_000 }, async () => {
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

    // A cold node of a local pool pre-pulls it by digest (the default direct pre-pull), and a build job runs in it.
    const check = [
      'cat /etc/build-image-release',
      'ls /opt',
      'test ! -e /opt/java/17 && echo java17-removed',
      'test ! -e /opt/ruby/3.3/share && echo ruby-share-removed',
      'test ! -e /var/cache/pkg && echo cache-removed',
      'stat -c "%u %a" /opt/python/3.12/bin/main',
      'ls /opt/go/1.22/lib',
      // Node.js is not in the image: the node's toolchain cache gives it, first on PATH.
      'cat /etc/buildfleet/toolchains',
      'version',
      'ls "$RUNNER_TOOL_CACHE/node/20.11.0/x64/lib/d0" | wc -l',
      'ls /opt/ci',
      'pwd',
    ].join('; ');
    const stateDir = await mkdtemp('/tmp/bf-ci-'); // short: node sockets live under it
    const pools = new PoolManager(new StateStore(stateDir));
    let run: { exitCode: number; stdout: string; stderr: string };
    try {
      const readyStarted = Date.now();
      // The toolchains the image expects come from the node's cache: here made by the image's own
      // make-tree.sh as the installer (the first job installs and pushes; other nodes would pull).
      const installer = `sh ${join(repoRoot, 'ci', 'build-image', 'bin', 'make-tree.sh')} "$PREFIX" 40 128 "$TOOL $VERSION"`;
      const cache = { registry: `${registry.host}/ci/toolchains`, maxSize: '256M', toolchains: ['node@20.11.0'], installer };
      await pools.apply(parsePoolSpec({ name: 'ci-cold', nodes: 1, disks: { runtime: '2G', workload: '512M' }, images: [ref], cache }));
      process.stderr.write(`cold node Ready with the image: ${Date.now() - readyStarted} ms\n`);
      run = await runCli(['pool', 'exec', 'ci-cold', '--', 'sh', '-c', check], { BUILDFLEET_STATE_DIR: stateDir });
    } finally {
      await pools.delete('ci-cold').catch(() => {});
      await rm(stateDir, { recursive: true, force: true });
    }
    assert.equal(run.exitCode, 0, run.stderr);
    assert.deepEqual(run.stdout.trim().split('\n'), [
      'runtimes: ci go java python ruby',
      'ci', 'go', 'hostedtoolcache', 'java', 'python', 'ruby', // hostedtoolcache: the node's toolchain cache, mounted read-only
      'java17-removed',
      'ruby-share-removed',
      'cache-removed',
      '1000 755',
      'STAMP',
      'node@20.11.0',
      'node 20.11.0',
      '40',
      // COPY . /opt/ci: the context minus what .dockerignore leaves out (README.md).
      '.dockerignore', 'Dockerfile', 'bin',
      '/workspace', // a pool job works in the node's workload disk, whatever the image's WORKDIR
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

  test('no Dockerfile, or flags that do not go together: exit 2, one line, nothing built', { timeout: 60_000 }, async () => {
    const [noDockerfile, layersAlone, pushToDaemon] = await Promise.all([
      build([join(work.path, 'empty'), '--tag', `${registry.host}/bad/empty:v1`, '--push']),
      build([join(work.path, 'ok'), '--tag', `${registry.host}/bad/ok:v1`, '--layers', '4']),
      build([join(work.path, 'ok'), '--tag', 'docker-daemon:local/ok:v1', '--push']),
    ]);
    oneClearLine(noDockerfile, 2, /no Dockerfile at .*empty\/Dockerfile \(give one with --file\)$/);
    oneClearLine(layersAlone, 2, /--layers and --from-layer need --squash/);
    oneClearLine(pushToDaemon, 2, /--push needs a registry --tag/);
    assert.deepEqual(await tagsOf(registry, 'bad/empty'), []);
  });

  test('a failing RUN step: exit 10, one line naming the step, no report, no manifest pushed', { timeout: 120_000 }, async () => {
    const report = join(work.path, 'fails-report.json');
    const result = await build([join(work.path, 'fails'), '--tag', `${registry.host}/bad/fails:v1`, '--squash', '--push', '--report', report]);
    oneClearLine(result, 10, /build failed at step 3\/4 \(RUN false\): The command '\/bin\/sh -c false' returned a non-zero code: 1$/);
    assert.equal(existsSync(report), false, 'no report for a failed build');
    assert.deepEqual(await tagsOf(registry, 'bad/fails'), []);
  });

  test('an unreachable registry: exit 5, one line naming it, found before the build', { timeout: 120_000 }, async () => {
    const host = `127.0.0.1:${await freePort()}`;
    const result = await build([join(work.path, 'ok'), '--tag', `${host}/bad/ok:v1`, '--squash', '--push']);
    oneClearLine(result, 5, new RegExp(host.replace(/\./g, '\\.')));
    assert.equal(await engineHas(`${host}/bad/ok:v1`), false, 'nothing was built');
  });

  test('wrong credentials: exit 4, one line, nothing built or pushed; the right ones push (the layers as built, no --squash)', { timeout: 120_000 }, async () => {
    const tag = `${locked.host}/team/image:v1`;
    oneClearLine(await runCli(['-q', '--creds', 'alice:wrong', 'image', 'build', join(work.path, 'ok'), '--tag', tag, '--network', 'none', '--squash', '--push'], { DOCKER_HOST: builder.host }), 4, /credentials|unauthorized|denied/i);
    assert.equal(await engineHas(tag), false, 'nothing was built');
    assert.deepEqual(await tagsOf(locked, 'team/image', 'alice:s3cret'), []);

    // Without --squash: the layers go as built (copied from the engine, compressed on the way).
    const ok = await runCli(['--json', '--creds', 'alice:s3cret', 'image', 'build', join(work.path, 'ok'), '--tag', tag, '--network', 'none', '--push'], { DOCKER_HOST: builder.host });
    assert.equal(ok.exitCode, 0, ok.stderr);
    const report = JSON.parse(ok.stdout) as ImageBuildReport;
    assert.deepEqual([report.source.layers, report.result!.layers, report.result!.squashed, report.result!.pushed], [2, 2, false, true]);
    assert.deepEqual(await tagsOf(locked, 'team/image', 'alice:s3cret'), ['v1']);
  });

  test('--target, --build-arg and --label reach the engine; --squash without --push replaces the engine\'s tag with one layer', { timeout: 120_000 }, async () => {
    const result = await runCli(
      ['--json', 'image', 'build', join(work.path, 'stages'), '--tag', 'docker-daemon:local/stages:v1', '--target', 'first', '--build-arg', 'MSG=hello from an arg', '--label', 'team=ci', '--squash', '--network', 'none'],
      { DOCKER_HOST: builder.host },
    );
    assert.equal(result.exitCode, 0, result.stderr);
    const report = JSON.parse(result.stdout) as { source: { layers: number }; result: { layers: number; pushed: boolean; squashed: boolean; reference: string }; squash: { shadowedBytes: number } };
    assert.deepEqual([report.result.layers, report.result.pushed, report.result.squashed, report.result.reference], [1, false, true, 'docker-daemon:local/stages:v1']);
    assert.equal(report.source.layers, 4);
    assert.ok(report.squash.shadowedBytes >= 256 * 1024, 'the deleted junk is gone');
    const inspected = (await builder.docker.getImage('local/stages:v1').inspect()) as { RootFS: { Layers: string[] }; Config: { Labels: Record<string, string> } };
    assert.equal(inspected.RootFS.Layers.length, 1);
    assert.equal(inspected.Config.Labels.team, 'ci');
    const run = await builder.cli(['run', '--rm', '--network', 'none', 'local/stages:v1', 'sh', '-c', 'cat /msg; test -e /second && echo second-stage || echo first-stage-only']);
    assert.deepEqual(run.stdout.trim().split('\n'), ['hello from an arg', 'first-stage-only']);
  });
});
