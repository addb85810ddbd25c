import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chartSpec, latency, markdown, percentile, summarize, type DiskIsolationMeta, type Period } from './report.js';

const meta: DiskIsolationMeta = {
  preset: 'small',
  cores: 2,
  runs: 2,
  writers: 2,
  loadSeconds: 6,
  budgetMiBps: { write: 50, read: 50 },
  startedAt: '2026-12-05T00:00:00.000Z',
  layouts: { single: 'one disk', dual: 'two disks' },
  writer: 'dd',
};

const period = (layout: Period['layout'], load: Period['load'], run: number, run_: number[], ps: number[], conditions: string[] = [], bytesWritten = 0): Period => ({
  layout,
  load,
  run,
  seconds: 5,
  latencies: { 'docker run': run_, 'docker ps': ps },
  conditions,
  bytesWritten,
  deviceBytesWritten: layout === 'single' ? { runtime: bytesWritten } : { runtime: 0, workload: bytesWritten },
});

test('percentiles are nearest-rank: always a measured value', () => {
  const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(sorted, 50), 50);
  assert.equal(percentile(sorted, 99), 99);
  assert.equal(percentile([0.3, 0.1, 0.2].sort(), 90), 0.3);
  assert.deepEqual(latency([2, 1, 3]), { samples: 3, p50: 2, p90: 3, p99: 3, max: 3 });
  assert.ok(Number.isNaN(latency([]).p50));
});

test('summary: every run pooled per layout, load and probe; conditions united; writers’ rate over the periods', () => {
  const MiB = 1024 ** 2;
  const report = summarize(meta, [
    period('dual', 'build I/O', 1, [0.4], [0.01], ['WorkloadDiskSaturated'], 200 * MiB),
    period('single', 'idle', 1, [0.3, 0.2], [0.002]),
    period('single', 'build I/O', 1, [1.5, 2.5], [0.05], ['RuntimeDiskSaturated', 'WorkloadDiskSaturated'], 250 * MiB),
    period('single', 'build I/O', 2, [3.5], [0.04], ['WorkloadDiskSaturated'], 150 * MiB),
    period('dual', 'idle', 1, [0.35], [0.003]),
  ]);
  assert.equal(report.kind, 'disk-isolation');
  assert.deepEqual(
    report.rows.map((r) => `${r.layout}/${r.load}/${r.probe}`),
    ['single/idle/docker ps', 'single/idle/docker run', 'single/build I/O/docker ps', 'single/build I/O/docker run', 'dual/idle/docker ps', 'dual/idle/docker run', 'dual/build I/O/docker ps', 'dual/build I/O/docker run'],
  );
  const singleRun = report.rows.find((r) => r.layout === 'single' && r.load === 'build I/O' && r.probe === 'docker run')!;
  assert.deepEqual(singleRun.latency, { samples: 3, p50: 2.5, p90: 3.5, p99: 3.5, max: 3.5 });
  const singleLoad = report.loads.find((l) => l.layout === 'single' && l.load === 'build I/O')!;
  assert.deepEqual(singleLoad.conditions, ['RuntimeDiskSaturated', 'WorkloadDiskSaturated']);
  assert.equal(singleLoad.writeMiBps, 40); // 400 MiB over two 5 s periods
  const table = markdown(report);
  assert.match(table, /\| single \| build I\/O \| docker run \| 3 \| 2\.500 \| 3\.500 \| \*\*3\.500\*\* \| 3\.500 \| 11\.7x \| RuntimeDiskSaturated, WorkloadDiskSaturated \| 40\.0 \| 40\.0 \(one disk\) \|/);
  assert.match(table, /\| dual \| idle \| docker ps \| 1 \|.*\| none \|  \| 0\.0 \/ 0\.0 \|/);
  assert.match(table, /\| dual \| build I\/O \| docker run \|.*\| 0\.0 \/ 40\.0 \|/); // 200 MiB in one 5 s period
  const spec = chartSpec(report) as { data: { values: unknown[] } };
  assert.equal(spec.data.values.length, report.rows.length * 4);
});
