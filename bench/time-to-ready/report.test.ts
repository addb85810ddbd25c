import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeReport } from './chart.js';
import { chartSpec, markdown, PHASES, summarize, type NodeRun, type Phase } from './report.js';

const phases = (...seconds: number[]) => Object.fromEntries(PHASES.map((phase, i) => [phase, seconds[i] ?? 0])) as Record<Phase, number>;
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
const run = (variant: string, n: number, node: number, seconds: number[], upstreamBytes?: number): NodeRun => ({
  variant,
  run: n,
  node,
  phases: phases(...seconds),
  readySeconds: sum(seconds),
  ...(upstreamBytes !== undefined && { upstreamBytes }),
});

const meta = { image: 'gen/large', preset: 'small', cores: 2, concurrent: 2, runsPerVariant: 3, startedAt: '2026-12-05T19:00:00Z', variants: { layered: '68 layers, docker pull', 'K=4 fetch': 'four balanced layers, buildfleet fetch' } };

const runs: NodeRun[] = [
  // Two nodes at once per run: the slower node stands for the run.
  run('layered', 1, 1, [0.3, 0.5, 10, 20, 3], 2e9),
  run('layered', 1, 2, [0.3, 0.5, 12, 22, 3], 2e9),
  run('layered', 2, 1, [0.3, 0.5, 9, 19, 3], 2e9),
  run('layered', 2, 2, [0.3, 0.5, 9, 18, 3], 2e9),
  run('layered', 3, 1, [0.3, 0.5, 11, 25, 3], 2e9),
  run('layered', 3, 2, [0.3, 0.5, 10, 21, 3], 2e9),
  run('K=4 fetch', 1, 1, [0.3, 0.5, 2, 6, 1], 1e9),
  run('K=4 fetch', 1, 2, [0.3, 0.5, 2, 5, 1], 1e9),
];

test('summary: variants in order, the slowest node per run, median/min/max, ratio to the stream floor', () => {
  const report = summarize(meta, runs, [
    { floor: 'stream floor', run: 1, seconds: 18 },
    { floor: 'stream floor', run: 2, seconds: 20 },
    { floor: 'extract floor', run: 1, seconds: 2 },
  ]);
  assert.deepEqual(report.rows.map((row) => row.variant), ['layered', 'K=4 fetch']);
  const layered = report.rows[0]!;
  assert.equal(layered.runs, 3);
  // Run 1: node 2 (37.8 s); run 2: node 1 (31.8 s); run 3: node 1 (39.8 s).
  assert.deepEqual(layered.ready, { median: 37.8, min: 31.8, max: 39.8 });
  assert.equal(layered.phases.download, 11);
  assert.equal(layered.phases['decompress + extract'], 22);
  assert.equal(report.floors[0]!.seconds.median, 19);
  // The pull of the slowest nodes: 34, 28 and 36 s; the floor is a pull too.
  assert.deepEqual(layered.pull, { median: 34, min: 28, max: 36 });
  assert.ok(Math.abs(layered.pullPerStreamFloor! - 34 / 19) < 1e-9);
  assert.equal(layered.upstreamBytes?.median, 2e9);
  assert.deepEqual(report.floors.map((row) => row.floor), ['stream floor', 'extract floor']);
});

test('markdown: every phase a column, every variant and floor a row', () => {
  const text = markdown(summarize(meta, runs, [{ floor: 'stream floor', run: 1, seconds: 18 }, { floor: 'extract floor', run: 1, seconds: 2 }]));
  for (const phase of PHASES) assert.match(text, new RegExp(`\\| ${phase.replace('+', '\\+')} s `));
  assert.match(text, /\| layered \|/);
  assert.match(text, /\| K=4 fetch \|/);
  // A pipe inside a cell is escaped, or the table would gain columns.
  assert.ok(text.includes('| stream floor: curl \\| pigz -d \\| tar -x'), text);
  assert.match(text, /extract floor/);
  assert.match(text, /upstream MB/);
  assert.match(text, /- layered: 68 layers, docker pull/);
});

test('host CPU: the slowest node\'s run, median over runs, and over the cores (the shortest a CPU-bound run could be)', () => {
  const withCpu = runs.map((node) => ({ ...node, hostCpuSeconds: node.run * 2 }));
  const report = summarize(meta, withCpu, [{ floor: 'stream floor', run: 1, seconds: 18 }]);
  assert.deepEqual(report.rows[0]!.hostCpuSeconds, { median: 4, min: 2, max: 6 });
  const text = markdown(report);
  const header = text.split('\n').find((line) => line.startsWith('| variant'))!;
  const layeredRow = text.split('\n').find((line) => line.startsWith('| layered |'))!;
  assert.equal(header.split('|').length, layeredRow.split('|').length, 'every row has the columns of the header');
  assert.match(header, /\| host CPU s \| host CPU \/ 2 cores s \|$/);
  assert.match(layeredRow, /\| 4\.00 \| 2\.00 \|$/);
  // A report without it (an old one, or no /proc/stat) has no such columns.
  assert.doesNotMatch(markdown(summarize(meta, runs, [])), /host CPU/);
});

test('chart: a stacked bar per variant and phase, a bar per floor, rendered to SVG and PNG', { timeout: 60_000 }, async () => {
  const report = summarize(meta, runs, [{ floor: 'stream floor', run: 1, seconds: 18 }, { floor: 'extract floor', run: 1, seconds: 2 }]);
  const spec = chartSpec(report) as { data: { values: Array<{ row: string }> } };
  assert.equal(spec.data.values.filter((bar) => bar.row === 'layered').length, PHASES.length);
  assert.equal(spec.data.values.filter((bar) => bar.row.endsWith('floor (pull only)')).length, 4);
  const dir = await mkdtemp(join(tmpdir(), 'bf-ttr-report-'));
  try {
    const files = await writeReport(report, dir);
    assert.deepEqual(files.map((file) => file.slice(dir.length + 1)), ['report.md', 'report.json', 'time-to-ready.svg', 'time-to-ready.png']);
    const svg = await readFile(join(dir, 'time-to-ready.svg'), 'utf8');
    assert.match(svg, /^<svg/);
    for (const label of ['layered', 'K=4 fetch', 'decompress + extract', 'stream floor (pull only)', 'extract floor']) assert.ok(svg.includes(label), `the chart shows ${label}`);
    const png = await readFile(join(dir, 'time-to-ready.png'));
    assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
    assert.ok((await stat(join(dir, 'time-to-ready.png'))).size > 5000);
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'report.json'), 'utf8')), JSON.parse(JSON.stringify(report)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('chart: a direct variant starts its runtime after the pull, and the floors start where the pulls do', () => {
  const report = summarize(meta, [run('k4', 1, 1, [1, 2, 10, 20, 3]), run('k4-direct', 1, 1, [1, 4, 8, 1, 0.5])], [{ floor: 'stream floor', run: 1, seconds: 12 }]);
  const bars = (chartSpec(report) as { data: { values: Array<{ row: string; phase: string; order: number; seconds: number }> } }).data.values;
  const stacked = (row: string) => bars.filter((bar) => bar.row === row).sort((a, b) => a.order - b.order).map((bar) => bar.phase);
  assert.deepEqual(stacked('k4'), ['provision', 'runtime up', 'download', 'decompress + extract', 'first run']);
  assert.deepEqual(stacked('k4-direct'), ['provision', 'download', 'decompress + extract', 'runtime up', 'first run']);
  // Before the pull: 1 + 2 for k4, 1 for k4-direct; the median of the two.
  assert.equal(bars.find((bar) => bar.row === 'stream floor (pull only)' && bar.order === 0)?.seconds, 2);
});
