import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { testCliCommand, repoRoot } from '../test/helpers/real.js';

let fixture: PoolFixture;
before(async () => {
  fixture = await startPoolFixture();
});
after(async () => {
  await fixture?.stop();
});

/** One clear line on stderr, the exit code, and no trace of the pool. */
function assertRefused(result: { exitCode: number; stderr: string }, exitCode: number, message: RegExp, pool: string): void {
  assert.equal(result.exitCode, exitCode, result.stderr);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  assert.match(result.stderr, message);
  assert.equal(existsSync(fixture.manager.store.poolDir(pool)), false, `nothing of pool ${pool} was created`);
}

test('an invalid spec names the field and creates nothing', { timeout: 120_000 }, async () => {
  const spec = await fixture.writeSpec('invalid', { name: 'invalid', nodes: 1, disks: { runtime: '4 gallons' }, images: [fixture.image] });
  assertRefused(await fixture.cli(['pool', 'apply', '-f', spec]), 2, /invalid\.yaml: disks\.runtime\.size: not a size: "4 gallons"/, 'invalid');
  const typo = await fixture.writeSpec('typo', { name: 'typo', nodes: 1, probe: { intervalSecs: 5 }, images: [fixture.image] });
  assertRefused(await fixture.cli(['pool', 'apply', '-f', typo]), 2, /probe: Unrecognized key: "intervalSecs"/, 'typo');
});

test('disks larger than the free space are refused before anything is made', { timeout: 120_000 }, async () => {
  const spec = await fixture.writeSpec('huge', { name: 'huge', nodes: 2, disks: { runtime: '64T', workload: '64T' }, images: [fixture.image] });
  assertRefused(await fixture.cli(['pool', 'apply', '-f', spec]), 8, /2 node\(s\) need 262144\.0 GiB of disk but .* has [\d.]+ GiB free/, 'huge');
});

test('without root the local provider refuses, and creates nothing', { timeout: 120_000 }, async () => {
  const result = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...testCliCommand(), 'pool', 'create', 'unprivileged', '--nodes', '1', '--image', fixture.image], {
    cwd: repoRoot,
    env: { BUILDFLEET_STATE_DIR: fixture.stateDir, HOME: '/tmp', PATH: process.env.PATH },
    reject: false,
  });
  assertRefused({ exitCode: result.exitCode ?? -1, stderr: result.stderr }, 8, /needs root/, 'unprivileged');
});

test('a pool name already in use is refused and the pool is left as it was', { timeout: 120_000 }, async () => {
  const first = await fixture.cli(['pool', 'create', 'taken', '--nodes', '0', '--image', fixture.image]);
  assert.equal(first.exitCode, 0, first.stderr);
  const record = readFileSync(join(fixture.manager.store.poolDir('taken'), 'pool.json'), 'utf8');
  const second = await fixture.cli(['pool', 'create', 'taken', '--nodes', '1', '--image', fixture.image]);
  assert.equal(second.exitCode, 9, second.stderr);
  assert.equal(second.stderr.trim().split('\n').length, 1);
  assert.match(second.stderr, /pool taken already exists/);
  assert.equal(readFileSync(join(fixture.manager.store.poolDir('taken'), 'pool.json'), 'utf8'), record);
  assert.deepEqual(await fixture.manager.store.listNodeIds('taken'), []);

  // No Ready node: a job waits as long as asked, then says why.
  const job = await fixture.cli(['pool', 'exec', 'taken', '--wait', '1', '--', 'true']);
  assert.equal(job.exitCode, 8, job.stderr);
  assert.match(job.stderr.trim().split('\n').at(-1)!, /pool taken: no Ready node within 1 s \(no nodes\)/);
  await fixture.manager.delete('taken');
});

test('an image the registry cannot give is refused before any node is made', { timeout: 120_000 }, async () => {
  const missing = `${fixture.registry.host}/ci/missing:1`;
  assertRefused(await fixture.cli(['pool', 'create', 'noimage', '--nodes', '1', '--image', missing]), 3, /missing/, 'noimage');
});

test('a dry run fails where the apply would, with the same line, and changes nothing', { timeout: 180_000 }, async () => {
  const cases: Array<[string, object, number, RegExp]> = [
    ['gke', { provider: 'gke', images: [fixture.image] }, 2, /gke: required when provider is gke/],
    ['toolarge', { disks: { runtime: '99999999T' }, images: [fixture.image] }, 2, /disks\.runtime\.size: must be at most 64T/],
    ['noimages', {}, 2, /images: /],
    ['emptyimages', { images: [] }, 2, /images: give at least one image/],
    ['nospace', { nodes: 2, disks: { runtime: '64T', workload: '64T' }, images: [fixture.image] }, 8, /need 262144\.0 GiB of disk but .* has [\d.]+ GiB free/],
  ];
  for (const [name, extra, exitCode, message] of cases) {
    const spec = await fixture.writeSpec(name, { name, nodes: 1, ...extra });
    const dry = await fixture.cli(['pool', 'apply', '--dry-run', '-f', spec]);
    assertRefused(dry, exitCode, message, name);
    const real = await fixture.cli(['pool', 'apply', '-f', spec]);
    assertRefused(real, exitCode, message, name);
    // The same line, but for the free space, which moves while other tests write.
    const masked = (line: string) => line.replace(/[\d.]+ GiB free/, 'N GiB free');
    assert.equal(masked(dry.stderr), masked(real.stderr), `${name}: the same line`);
  }
  const noImage = await fixture.cli(['pool', 'create', 'bare', '--nodes', '1']);
  assertRefused(noImage, 2, /give the build image with --image/, 'bare');
});
