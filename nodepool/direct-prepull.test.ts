import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { leftovers, startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { FaultProxy } from '../test/helpers/registry-fakes.js';
import { parsePoolSpec } from './pool-spec/pool-spec.js';
import { phaseTimes } from './state/lifecycle.js';
import { blobCacheDir } from './state/store.js';
import type { PoolView } from './pool.js';

// prepull.mode: direct, through `pool apply` and a node's own agent. Real loop disks and dockerds: root.
let fixture: PoolFixture;
before(async () => {
  fixture = await startPoolFixture({ dataLayers: 3, layerBytes: 4 << 20, seed: 'direct' });
});
after(async () => {
  await fixture?.stop();
});

const spec = (name: string, image: string, nodes = 1) => ({ name, nodes, disks: { runtime: '512M', workload: '256M' }, images: [image], prepull: { mode: 'direct' } });
const events = async (pool: string, id: string) =>
  (await readFile(join(fixture.manager.store.nodeDir(pool, id), 'events.jsonl'), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { event: string; [field: string]: unknown });

test('direct pre-pull nodes started together are Ready with the image written before their runtimes started, each blob fetched once from upstream', { timeout: 600_000 }, async () => {
  // The registry behind a proxy that logs what the nodes ask of it.
  const upstream = await FaultProxy.start(fixture.registry.port);
  const image = fixture.image.replace(fixture.registry.host, upstream.host);
  let applied;
  try {
    applied = await fixture.cli(['--json', 'pool', 'apply', '-f', await fixture.writeSpec('direct', spec('direct', image, 2))]);
  } finally {
    await upstream.stop();
  }
  assert.equal(applied.exitCode, 0, applied.stderr);
  const view = JSON.parse(applied.stdout).pool as PoolView;
  assert.deepEqual(view.nodes.map((node) => node.phase), ['Ready', 'Ready']);
  const layers = await layerDigests(fixture, fixture.image);
  for (const digest of layers) assert.equal(upstream.log.filter((entry) => entry.method === 'GET' && entry.url.endsWith(digest)).length, 1, `layer ${digest} fetched once for both nodes`);
  const fromCache = (await Promise.all(view.nodes.map(async (node) => (await events('direct', node.id)).find((event) => event.event === 'direct-pull-done')!.fromCache as number))).sort((a, b) => a - b);
  assert.equal(fromCache[0], 0, 'one node fetched from upstream');
  assert.ok(fromCache[1]! > 0, 'the other read the blobs from the host cache');
  const id = view.nodes[0]!.id;
  const log = await events('direct', id);
  assert.ok(log.some((event) => event.event === 'direct-pull-done'), 'the agent installed the image itself');
  assert.ok(log.some((event) => event.event === 'image-verified'), 'then verified it through the runtime by digest');
  assert.ok(!log.some((event) => event.event === 'pull-started'), "the runtime's own pull was not needed");
  const status = (await fixture.manager.providerFor('local').status.read('direct', id))!;
  assert.ok(status.install, 'the install marks are in the status');
  const times = phaseTimes(status.transitions, status);
  for (const phase of ['provisionMs', 'runtimeUpMs', 'downloadMs', 'extractMs'] as const) assert.ok(times[phase]! >= 0, `${phase} measured`);
  assert.equal(times.provisionMs! + times.downloadMs! + times.extractMs! + times.runtimeUpMs!, times.readyMs);

  for (const node of view.nodes) {
    const exec = await fixture.cli(['pool', 'exec', 'direct', '--', 'sh', '-c', 'ls /data']);
    assert.equal(exec.exitCode, 0, exec.stderr);
    assert.deepEqual(exec.stdout.trim().split('\n'), ['blob0.bin', 'blob1.bin', 'blob2.bin'], node.id);
  }
  const deleted = await fixture.cli(['pool', 'delete', 'direct']);
  assert.equal(deleted.exitCode, 0, deleted.stderr);
  assert.deepEqual(await leftovers(fixture.stateDir), { processes: [], mounts: [], loopDevices: [], cgroups: [] });
  assert.ok(!existsSync(blobCacheDir(fixture.stateDir)), 'the blob cache goes with the last pool');
});

test('an upstream that breaks every download: the node is held out of Ready with PrePullFailed, and becomes Ready once the upstream is back', { timeout: 600_000 }, async () => {
  const proxy = await FaultProxy.start(fixture.registry.port);
  try {
    const image = fixture.image.replace(fixture.registry.host, proxy.host);
    // Every layer download breaks before its first byte: no resume can make progress. (The
    // manifest and config still come: the pool pins the image by them.)
    const layers = await layerDigests(fixture, fixture.image);
    proxy.inject({ cutAfter: 0 }, 1_000_000, (method, url) => method === 'GET' && layers.some((digest) => url.endsWith(digest)));
    const applying = fixture.manager.apply(parsePoolSpec(spec('gone', image)), { timeoutMs: 400_000 });
    let applyError: Error | undefined;
    applying.catch((err: Error) => (applyError = err));
    const provider = fixture.manager.providerFor('local');
    let condition: { status: string; reason: string; message: string } | undefined;
    for (let waited = 0; waited < 240 && condition?.status !== 'True'; waited++) {
      await sleep(1000);
      if (applyError) throw applyError;
      const status = await provider.status.read('gone', 'n1').catch(() => undefined);
      condition = status?.conditions.PrePullFailed;
      if (status) assert.notEqual(status.phase, 'Ready', 'never Ready without its image');
    }
    assert.equal(condition?.status, 'True', 'PrePullFailed is raised');
    assert.match(condition!.message, /could not be resumed|broke/);
    assert.ok((await events('gone', 'n1')).some((event) => event.event === 'direct-pull-failed'));

    // The upstream is back: the runtime's pull (which the node goes on retrying) succeeds.
    proxy.clearFaults();
    await applying;
    const status = (await provider.status.read('gone', 'n1'))!;
    assert.equal(status.phase, 'Ready');
    assert.equal(status.conditions.PrePullFailed?.status, 'False');
  } finally {
    await fixture.manager.delete('gone').catch(() => {});
    await proxy.stop();
  }
});

/** The layer digests of a pushed image, from the registry itself. */
async function layerDigests(fixture: PoolFixture, image: string): Promise<string[]> {
  const [name, tag] = image.slice(fixture.registry.host.length + 1).split(':') as [string, string];
  const res = await fetch(`${fixture.registry.url}/v2/${name}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } });
  return ((await res.json()) as { layers: Array<{ digest: string }> }).layers.map((layer) => layer.digest);
}
