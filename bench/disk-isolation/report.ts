import { markdownTable } from '../stats.js';

/**
 * The disk-isolation report, pure: latency samples of the runtime's API under build I/O become
 * percentiles per node layout, load and probe; the saturation conditions the agent raised and
 * the writers' throughput go beside them; then the Markdown table and the chart's vega-lite spec.
 */

export const LAYOUTS = ['single', 'dual'] as const;
export type Layout = (typeof LAYOUTS)[number];
/** `idle`: no build runs (the floor of each probe on that node); `build I/O`: the writers run. */
export const LOADS = ['idle', 'build I/O'] as const;
export type Load = (typeof LOADS)[number];
/** `docker ps`: list containers through the node's Docker API; `docker run`: `docker run --rm IMAGE true` through it. */
export const PROBES = ['docker ps', 'docker run'] as const;
export type Probe = (typeof PROBES)[number];
export const PERCENTILES = ['p50', 'p90', 'p99', 'max'] as const;

export type Latency = { samples: number; p50: number; p90: number; p99: number; max: number };

/** One measured period: a layout, a load, every probe's latencies (seconds), what the agent raised, what the writers wrote. */
export type Period = {
  layout: Layout;
  load: Load;
  run: number;
  seconds: number;
  latencies: Record<Probe, number[]>;
  /** Condition types the agent set True at any time in the period (RuntimeDiskSaturated...). */
  conditions: string[];
  /** Bytes the build writers wrote in the period (0 when idle; whole dd chunks only). */
  bytesWritten: number;
  /** Bytes written to each disk's device in the period (diskstats: the writers, their journal, the runtime's own writes); a single-disk node has one device, counted once, as runtime. */
  deviceBytesWritten: { runtime: number; workload?: number };
};

export type LatencyRow = { layout: Layout; load: Load; probe: Probe; latency: Latency };
export type LoadRow = { layout: Layout; load: Load; conditions: string[]; writeMiBps: number; deviceWriteMiBps: { runtime: number; workload?: number } };

export type DiskIsolationMeta = {
  preset: string;
  cores: number;
  runs: number;
  writers: number;
  loadSeconds: number;
  /** Each disk's budget, MiB/s (a single-disk node has the one runtime disk and its budget). */
  budgetMiBps: { write: number; read: number };
  startedAt: string;
  layouts: Record<Layout, string>;
  writer: string;
};

export type DiskIsolationReport = { kind: 'disk-isolation'; meta: DiskIsolationMeta; rows: LatencyRow[]; loads: LoadRow[] };

/** Nearest-rank percentile of sorted values (p in 0..100): a value that was measured, never an interpolation. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function latency(samples: number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  return { samples: sorted.length, p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN };
}

/** Pools every run's samples per layout, load and probe (percentiles over all of them), in layout, load, probe order. */
export function summarize(meta: DiskIsolationMeta, periods: Period[]): DiskIsolationReport {
  const rows: LatencyRow[] = [];
  const loads: LoadRow[] = [];
  for (const layout of LAYOUTS) {
    for (const load of LOADS) {
      const matching = periods.filter((p) => p.layout === layout && p.load === load);
      if (matching.length === 0) continue;
      for (const probe of PROBES) rows.push({ layout, load, probe, latency: latency(matching.flatMap((p) => p.latencies[probe])) });
      const seconds = matching.reduce((sum, p) => sum + p.seconds, 0);
      const rate = (bytes: (p: Period) => number | undefined) => (seconds > 0 ? matching.reduce((sum, p) => sum + (bytes(p) ?? 0), 0) / 1024 ** 2 / seconds : 0);
      const workload = matching.some((p) => p.deviceBytesWritten.workload !== undefined);
      loads.push({
        layout,
        load,
        conditions: [...new Set(matching.flatMap((p) => p.conditions))].sort(),
        writeMiBps: rate((p) => p.bytesWritten),
        deviceWriteMiBps: { runtime: rate((p) => p.deviceBytesWritten.runtime), ...(workload && { workload: rate((p) => p.deviceBytesWritten.workload) }) },
      });
    }
  }
  return { kind: 'disk-isolation', meta, rows, loads };
}

const s = (value: number) => (Number.isFinite(value) ? value.toFixed(3) : '-');

const deviceRates = (load: LoadRow) => {
  const { runtime, workload } = load.deviceWriteMiBps;
  return workload === undefined ? `${runtime.toFixed(1)} (one disk)` : `${runtime.toFixed(1)} / ${workload.toFixed(1)}`;
};

export function markdown(report: DiskIsolationReport): string {
  const { meta } = report;
  const header = ['layout', 'load', 'probe', 'samples', ...PERCENTILES.map((p) => `${p} s`), 'vs idle p99', 'saturation raised', 'writers MiB/s', 'device writes MiB/s: runtime / workload'];
  const rows = report.rows.map((row) => {
    const idle = report.rows.find((r) => r.layout === row.layout && r.probe === row.probe && r.load === 'idle');
    const load = report.loads.find((l) => l.layout === row.layout && l.load === row.load);
    return [
      row.layout,
      row.load,
      row.probe,
      String(row.latency.samples),
      ...PERCENTILES.map((p) => (p === 'p99' ? `**${s(row.latency[p])}**` : s(row.latency[p]))),
      idle && row.load !== 'idle' ? `${(row.latency.p99 / idle.latency.p99).toFixed(1)}x` : '',
      load?.conditions.join(', ') || 'none',
      load && row.load !== 'idle' ? load.writeMiBps.toFixed(1) : '',
      load ? deviceRates(load) : '',
    ];
  });
  const title =
    `Disk isolation: runtime API latency under build I/O, ${meta.writers} writer(s) for ${meta.loadSeconds} s per run, ${meta.runs} run(s), ` +
    `budget per disk ${meta.budgetMiBps.write} MiB/s write, ${meta.budgetMiBps.read} MiB/s read; ${meta.cores} cores; ${meta.startedAt}.`;
  const legend = [...Object.entries(meta.layouts).map(([name, what]) => `- ${name}: ${what}`), `- writers: ${meta.writer}`];
  return [title, '', markdownTable(header, rows), '', ...legend, ''].join('\n');
}

/** p50 / p90 / p99 / max per probe, one group of bars per layout and load; each probe its own scale (docker ps is milliseconds, docker run tenths of seconds). */
export function chartSpec(report: DiskIsolationReport): Record<string, unknown> {
  const values = report.rows.flatMap((row) =>
    PERCENTILES.map((p) => ({ case: `${row.layout} disk, ${row.load}`, probe: row.probe, percentile: p, seconds: row.latency[p] })),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Runtime API latency under build I/O: single disk vs runtime + workload disks',
      subtitle: `${report.meta.writers} writer(s), ${report.meta.budgetMiBps.write} MiB/s write budget per disk, ${report.meta.runs} run(s)`,
    },
    data: { values },
    facet: { column: { field: 'probe', type: 'nominal', title: null } },
    spec: {
      width: 300,
      height: { step: 12 },
      mark: { type: 'bar' },
      encoding: {
        y: { field: 'case', type: 'nominal', sort: null, title: null },
        yOffset: { field: 'percentile', sort: [...PERCENTILES] },
        x: { field: 'seconds', type: 'quantitative', title: 'seconds' },
        color: { field: 'percentile', type: 'nominal', sort: [...PERCENTILES], scale: { domain: [...PERCENTILES], range: ['#4c78a8', '#72b7b2', '#f58518', '#e45756'] } },
        tooltip: [{ field: 'seconds', format: '.3f' }],
      },
    },
    resolve: { scale: { x: 'independent' } },
  };
}
