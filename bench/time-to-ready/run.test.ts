import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { testCliCommand, repoRoot } from '../../test/helpers/real.js';
import { FLOORS, PHASES, type TimeToReadyReport } from './report.js';

// Root: cold local nodes (loop disks, containerd, dockerd). The registry is the bench's own.
const out = await mkdtemp(join(tmpdir(), 'bf-ttr-out-'));
after(() => rm(out, { recursive: true, force: true }));

test('bench time-to-ready on the small preset: every variant and phase measured, both floors, the report files', { timeout: 900_000 }, async () => {
  const cli = await execa(process.execPath, [...testCliCommand(), '--json', 'bench', 'time-to-ready', '--preset', 'small', '--variants', 'layered,k1,k2,k2-direct,k1-preloaded', '--runs', '1', '--concurrent', '2', '--upstream-mbps', '800', '--settle-seconds', '2', '--out', out], {
    cwd: repoRoot,
    reject: false,
    timeout: 840_000,
  });
  assert.equal(cli.exitCode, 0, cli.stderr);
  const report = JSON.parse(cli.stdout) as TimeToReadyReport;
  assert.equal(report.kind, 'time-to-ready');
  assert.deepEqual(report.rows.map((row) => row.variant), ['layered', 'k1', 'k2', 'k2-direct', 'k1-preloaded']);
  for (const row of report.rows) {
    assert.equal(row.runs, 1);
    for (const phase of PHASES) assert.ok(Number.isFinite(row.phases[phase]) && row.phases[phase] >= 0, `${row.variant}: ${phase} = ${row.phases[phase]}`);
    // Nothing is instant on a cold node: each of these takes time, and the total is their sum.
    for (const phase of ['provision', 'runtime up', 'first run'] as const) assert.ok(row.phases[phase] > 0, `${row.variant}: ${phase} measured`);
    // A preloaded disk holds the image: its node downloads nothing and only verifies it.
    if (row.variant.endsWith('-preloaded')) assert.equal(row.phases.download, 0);
    else assert.ok(row.phases.download > 0, `${row.variant}: download measured`);
    const sum = PHASES.reduce((total, phase) => total + row.phases[phase], 0);
    assert.ok(Math.abs(sum - row.ready.median) < 0.05, `${row.variant}: phases add up to Ready (${sum} vs ${row.ready.median})`);
    assert.ok(row.pullPerStreamFloor && row.pullPerStreamFloor > 0);
    assert.ok(Math.abs(row.pull.median - row.phases.download - row.phases['decompress + extract']) < 0.05);
    // Two cold nodes start daemons and containers: the host was busy for a good part of a second at least.
    assert.ok(row.hostCpuSeconds && row.hostCpuSeconds.median > 0.2, `${row.variant}: host CPU ${row.hostCpuSeconds?.median} s`);
  }
  // Two nodes at once: through the runtime's pull each fetches the image; the direct pre-pull's
  // nodes share the host's blob cache, so upstream carries it once.
  const upstream = (variant: string) => report.rows.find((row) => row.variant === variant)!.upstreamBytes!.median;
  assert.ok(upstream('k2-direct') < 0.7 * upstream('k2'), `k2-direct took ${upstream('k2-direct')} bytes from upstream, k2 ${upstream('k2')}`);
  assert.ok(upstream('k1-preloaded') < 0.1 * upstream('k1'), 'preloaded nodes fetch no layers');
  assert.equal(report.meta.concurrent, 2);
  assert.equal(report.meta.upstreamMbps, 800);
  assert.deepEqual(report.floors.map((row) => row.floor), [...FLOORS]);
  for (const floor of report.floors) assert.ok(floor.seconds.median > 0);
  for (const file of ['report.md', 'report.json', 'time-to-ready.svg', 'time-to-ready.png']) assert.ok(existsSync(join(out, file)), file);
  assert.match(await readFile(join(out, 'report.md'), 'utf8'), /\| k2 \|/);
  // Everything the bench started is gone: no pool state, mount or loop device of it remains.
  const mounts = await readFile('/proc/mounts', 'utf8');
  assert.ok(!mounts.includes('buildfleet-ttr-'), 'no bench mount left');
  assert.match(report.meta.variants['k1-preloaded']!, /baked once in \d+\.\d s/);
});

test('an interrupted bench stops its nodes and daemons and removes its files, then exits 130', { timeout: 300_000 }, async () => {
  const bench = execa(process.execPath, [...testCliCommand(), 'bench', 'time-to-ready', '--preset', 'small', '--variants', 'k1', '--runs', '1', '--settle-seconds', '2'], { cwd: repoRoot, reject: false, timeout: 240_000 });
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    bench.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      // Mid-run: the node is being made or pulling when the signal comes.
      if (/k1 run 1\/1: 1 cold node/.test(stderr)) resolve();
    });
    bench.then(() => reject(new Error(`the bench ended before its first run: ${stderr}`)), reject);
  });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  bench.kill('SIGINT');
  const result = await bench;
  assert.equal(result.exitCode, 130, result.stderr);
  assert.match(result.stderr, /SIGINT: stopping every node and daemon/);
  const left = (await readdir(tmpdir())).filter((name) => name.startsWith('buildfleet-ttr-'));
  assert.deepEqual(left, [], 'no work dir left');
  assert.ok(!(await readFile('/proc/mounts', 'utf8')).includes('buildfleet-ttr-'), 'no disk of it mounted');
  const processes = await execa('pgrep', ['-f', 'buildfleet-ttr-'], { reject: false });
  assert.equal(processes.stdout.trim(), '', 'no agent or daemon of it running');
});
