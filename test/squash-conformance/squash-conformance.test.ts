import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { DockerEngine, RegistryServer } from '../../daemons/index.js';
import { startEngine, startRegistry, tempDir } from '../helpers/real.js';
import { diffRootfs, exportRootfs, imageRuntimeConfig } from '../helpers/rootfs-oracle.js';
import { openDestination, openSource } from '../../imagebuilder/transports/index.js';
import { copyImage } from '../../imagebuilder/copy/copy.js';
import { squashImage, SOURCE_LABEL, type SquashOptions, type SquashReport } from '../../imagebuilder/squash/squash.js';
import { buildConformanceCase, conformanceCases } from './cases.js';

/**
 * The oracle is the runtime: for every case, the root filesystem Docker shows for a container
 * of the squashed image must equal, entry by entry, the one it shows for the original, and the
 * runtime config must be equal (but for the label naming the source). K=1 and K=4.
 * Real Docker Engine 20.10 and registry; root.
 */
let engine: DockerEngine;
let registry: RegistryServer;
let work: { path: string; remove(): Promise<void> };

before(async () => {
  [engine, registry, work] = await Promise.all([startEngine(), startRegistry(), tempDir()]);
}, { timeout: 120_000 });

after(async () => {
  await Promise.allSettled([engine?.stop(), registry?.stop(), work?.remove()]);
});

async function squash(src: string, dst: string, options: SquashOptions): Promise<SquashReport> {
  const transport = { docker: engine.docker, tmpDir: work.path };
  const source = await openSource(src, transport);
  try {
    return await squashImage(source, await openDestination(dst, transport), { tmpDir: work.path, ...options });
  } finally {
    await source.close();
  }
}

function withoutSourceLabel(config: Record<string, unknown>): Record<string, unknown> {
  const labels = { ...((config.Labels as Record<string, string> | null) ?? {}) };
  delete labels[SOURCE_LABEL];
  return { ...config, Labels: Object.keys(labels).length > 0 ? labels : null };
}

for (const testCase of conformanceCases) {
  test(`squash keeps what the runtime sees: ${testCase.name}`, { timeout: 300_000 }, async () => {
    const original = `conformance/${testCase.name}:orig`;
    await buildConformanceCase(engine, original, testCase);
    const expected = await exportRootfs(engine, original);
    const expectedConfig = await imageRuntimeConfig(engine, original);
    for (const layers of [1, 4]) {
      const squashed = `conformance/${testCase.name}:k${layers}`;
      const report = await squash(`docker-daemon:${original}`, `docker-daemon:${squashed}`, { layers });
      assert.ok(report.layers.after <= layers && report.layers.after >= 1);
      const actual = await exportRootfs(engine, squashed);
      assert.deepEqual(diffRootfs(expected, actual), [], `K=${layers}: root filesystems differ`);
      assert.deepEqual(withoutSourceLabel((await imageRuntimeConfig(engine, squashed)) as Record<string, unknown>), withoutSourceLabel(expectedConfig as Record<string, unknown>), `K=${layers}: runtime config`);
    }
    // Partial squashes: everything above the base (what docker build --squash does), and above layer 2.
    const inputLayers = (await inspectLayers(`docker-daemon:${original}`)).length;
    for (const fromLayer of [2, 3].filter((n) => n <= inputLayers)) {
      const squashed = `conformance/${testCase.name}:from${fromLayer}`;
      let report: SquashReport;
      try {
        report = await squash(`docker-daemon:${original}`, `docker-daemon:${squashed}`, { fromLayer });
      } catch (err) {
        // A hardlink from a squashed layer to a kept one would need the kept bytes copied up: refused, clearly.
        assert.match((err as Error).message, /is a hardlink to .* in kept layer/, `--from-layer ${fromLayer}`);
        continue;
      }
      assert.equal(report.layers.after, fromLayer, `--from-layer ${fromLayer}: kept layers + 1`);
      const kept = (await inspectLayers(`docker-daemon:${squashed}`)).slice(0, fromLayer - 1);
      assert.deepEqual(kept, (await inspectLayers(`docker-daemon:${original}`)).slice(0, fromLayer - 1), 'kept layers unchanged');
      assert.deepEqual(diffRootfs(expected, await exportRootfs(engine, squashed)), [], `--from-layer ${fromLayer}: root filesystems differ`);
    }
  });
}

async function inspectLayers(ref: string): Promise<string[]> {
  const source = await openSource(ref, { docker: engine.docker, tmpDir: work.path });
  try {
    return (await source.resolve()).config.rootfs.diff_ids;
  } finally {
    await source.close();
  }
}

test('squash through the registry and back is byte-identical and deterministic', { timeout: 300_000 }, async () => {
  const first = conformanceCases[0]!;
  const original = `conformance/${first.name}:orig`;
  await copyImage(await openSource(`docker-daemon:${original}`, { docker: engine.docker, tmpDir: work.path }), await openDestination(`${registry.host}/conf/orig:v1`));
  const a = await squash(`${registry.host}/conf/orig:v1`, `${registry.host}/conf/squashed:a`, { layers: 2, sourceDateEpoch: 1_700_000_000 });
  const b = await squash(`${registry.host}/conf/orig:v1`, `oci:${join(work.path, 'layout')}:b`, { layers: 2, sourceDateEpoch: 1_700_000_000 });
  assert.deepEqual(a.outputLayers, b.outputLayers, 'same input and options give the same layer bytes, whatever the destination');
});
