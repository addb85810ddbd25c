import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort, type DockerEngine, type RegistryServer } from '../../nodepool/daemons/index.js';
import { runCli, startEngine, startRegistry, tempDir, type CliResult } from '../../test/helpers/real.js';
import { htpasswdAuth, writeHtpasswd } from '../../test/helpers/registry-fakes.js';

// `image build` on real components (Docker Engine, registries; root): what a CI job gets back
// when its build cannot succeed, and the paths around the push (target, build args, labels,
// squash back into the engine, credentials).
let engine: DockerEngine;
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
  work = await tempDir('buildfleet-build-bad-');
  for (const [name, files] of Object.entries(contexts)) {
    await mkdir(join(work.path, name));
    for (const [file, content] of Object.entries(files)) await writeFile(join(work.path, name, file), content);
  }
  const htpasswd = await writeHtpasswd(join(work.path, 'htpasswd'), { alice: 's3cret' });
  [engine, registry, locked] = await Promise.all([startEngine(), startRegistry(), startRegistry({ auth: htpasswdAuth(htpasswd) })]);
}, { timeout: 120_000 });

after(async () => {
  await Promise.allSettled([engine?.stop(), registry?.stop(), locked?.stop()]);
  await work?.remove();
});

const build = (args: string[]) => runCli(['-q', 'image', 'build', '--network', 'none', ...args], { DOCKER_HOST: engine.host });

function oneClearLine(result: CliResult, exitCode: number, pattern: RegExp): void {
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  assert.equal(result.exitCode, exitCode, `exit code (stderr: ${result.stderr})`);
  assert.equal(lines.length, 1, `exactly one line on stderr, got: ${result.stderr}`);
  assert.match(lines[0]!, /^buildfleet: error: /);
  assert.match(lines[0]!, pattern);
}

async function tagsOf(server: RegistryServer, repository: string, auth?: string): Promise<string[]> {
  const res = await request(`${server.url}/v2/${repository}/tags/list`, auth ? { headers: { authorization: `Basic ${Buffer.from(auth).toString('base64')}` } } : {});
  const body = (await res.body.json()) as { tags?: string[] | null };
  assert.notEqual(res.statusCode, 401, 'the tag list was readable');
  return res.statusCode === 200 ? (body.tags ?? []) : [];
}

async function engineHas(name: string): Promise<boolean> {
  return engine.docker.getImage(name).inspect().then(() => true, () => false);
}

// The cases are independent (own repositories and tags): they run side by side, mostly waiting on the engine.
describe('image build on bad input', { concurrency: true }, () => {
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

  test('wrong credentials: exit 4, one line, nothing built or pushed; the right ones push', { timeout: 120_000 }, async () => {
    const tag = `${locked.host}/team/image:v1`;
    oneClearLine(await runCli(['-q', '--creds', 'alice:wrong', 'image', 'build', join(work.path, 'ok'), '--tag', tag, '--network', 'none', '--squash', '--push'], { DOCKER_HOST: engine.host }), 4, /credentials|unauthorized|denied/i);
    assert.equal(await engineHas(tag), false, 'nothing was built');
    assert.deepEqual(await tagsOf(locked, 'team/image', 'alice:s3cret'), []);

    const ok = await runCli(['--json', '--creds', 'alice:s3cret', 'image', 'build', join(work.path, 'ok'), '--tag', tag, '--network', 'none', '--squash', '--push'], { DOCKER_HOST: engine.host });
    assert.equal(ok.exitCode, 0, ok.stderr);
    assert.deepEqual(await tagsOf(locked, 'team/image', 'alice:s3cret'), ['v1']);
  });

  test('--target, --build-arg and --label reach the engine; --squash without --push replaces the engine\'s tag with one layer', { timeout: 120_000 }, async () => {
    const result = await runCli(
      ['--json', 'image', 'build', join(work.path, 'stages'), '--tag', 'docker-daemon:local/stages:v1', '--target', 'first', '--build-arg', 'MSG=hello from an arg', '--label', 'team=ci', '--squash', '--network', 'none'],
      { DOCKER_HOST: engine.host },
    );
    assert.equal(result.exitCode, 0, result.stderr);
    const report = JSON.parse(result.stdout) as { source: { layers: number }; result: { layers: number; pushed: boolean; squashed: boolean; reference: string }; squash: { shadowedBytes: number } };
    assert.deepEqual([report.result.layers, report.result.pushed, report.result.squashed, report.result.reference], [1, false, true, 'docker-daemon:local/stages:v1']);
    assert.equal(report.source.layers, 4);
    assert.ok(report.squash.shadowedBytes >= 256 * 1024, 'the deleted junk is gone');
    const inspected = (await engine.docker.getImage('local/stages:v1').inspect()) as { RootFS: { Layers: string[] }; Config: { Labels: Record<string, string> } };
    assert.equal(inspected.RootFS.Layers.length, 1);
    assert.equal(inspected.Config.Labels.team, 'ci');
    const run = await engine.cli(['run', '--rm', '--network', 'none', 'local/stages:v1', 'sh', '-c', 'cat /msg; test -e /second && echo second-stage || echo first-stage-only']);
    assert.deepEqual(run.stdout.trim().split('\n'), ['hello from an arg', 'first-stage-only']);
  });
});
