import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { testCliCommand, repoRoot } from '../../test/helpers/real.js';
import { LAYOUTS, LOADS, PERCENTILES, PROBES, type DiskIsolationReport } from './report.js';

// Root: two one-node local pools (loop disks, containerd, dockerd). The registry is the bench's own.
const out = await mkdtemp(join(tmpdir(), 'bf-diskiso-out-'));
after(() => rm(out, { recursive: true, force: true }));

test('bench disk-isolation on the small preset: both layouts, every probe and percentile measured, conditions listed, the report files', { timeout: 600_000 }, async () => {
  const cli = await execa(process.execPath, [...testCliCommand(), '--json', 'bench', 'disk-isolation', '--preset', 'small', '--out', out], {
    cwd: repoRoot,
    reject: false,
    timeout: 540_000,
  });
  assert.equal(cli.exitCode, 0, cli.stderr);
  // Progress on stderr, the report alone on stdout.
  assert.match(cli.stderr, /dual run 1\/1: 2 writer\(s\)/);
  const report = JSON.parse(cli.stdout) as DiskIsolationReport;
  assert.equal(report.kind, 'disk-isolation');
  assert.equal(report.meta.preset, 'small');
  const cases = LAYOUTS.flatMap((layout) => LOADS.flatMap((load) => PROBES.map((probe) => `${layout}/${load}/${probe}`)));
  assert.deepEqual(report.rows.map((row) => `${row.layout}/${row.load}/${row.probe}`), cases);
  for (const row of report.rows) {
    assert.ok(row.latency.samples >= 1, `${row.layout} ${row.load} ${row.probe}: sampled`);
    for (const p of PERCENTILES) assert.ok(Number.isFinite(row.latency[p]) && row.latency[p] > 0, `${row.layout} ${row.load} ${row.probe}: ${p} = ${row.latency[p]}`);
  }
  assert.equal(report.loads.length, LAYOUTS.length * LOADS.length);
  for (const load of report.loads) {
    assert.ok(Array.isArray(load.conditions) && load.conditions.every((c) => /^(Runtime|Workload)DiskSaturated$/.test(c)), `${load.layout} ${load.load}: ${load.conditions}`);
    // The writers wrote during the load and not while idle.
    if (load.load === 'idle') assert.equal(load.writeMiBps, 0);
    else assert.ok(load.writeMiBps > 0, `${load.layout}: the writers wrote`);
    // One device on a single-disk node; on a dual-disk node the writers' bytes land on the workload disk's.
    assert.equal(load.deviceWriteMiBps.workload === undefined, load.layout === 'single');
    if (load.load === 'build I/O') assert.ok((load.deviceWriteMiBps.workload ?? load.deviceWriteMiBps.runtime) > 0, `${load.layout}: bytes on the device`);
  }
  for (const file of ['report.md', 'report.json', 'disk-isolation.svg', 'disk-isolation.png']) assert.ok(existsSync(join(out, file)), file);
  assert.match(await readFile(join(out, 'report.md'), 'utf8'), /\| dual \| build I\/O \| docker run \|/);
  // Everything the bench started is gone.
  assert.ok(!(await readFile('/proc/mounts', 'utf8')).includes('buildfleet-diskiso-'), 'no bench mount left');
});
