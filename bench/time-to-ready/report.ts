import { markdownTable, median } from '../stats.js';

/**
 * The time-to-ready report, pure: runs in, a summary, a Markdown table and a vega-lite chart
 * spec out. The benchmark measures; this only arranges, so its shape is tested without a node.
 */

/** A cold node's way to Ready, in the order it goes. */
export const PHASES = ['provision', 'runtime up', 'download', 'decompress + extract', 'first run'] as const;
export type Phase = (typeof PHASES)[number];

/** One cold node of one run: seconds spent in each phase, from the node's own timestamps. */
export type NodeRun = {
  variant: string;
  run: number;
  /** Which of the nodes started together (1..concurrent). */
  node: number;
  phases: Record<Phase, number>;
  /** From "add a node" to the build image's first container started. */
  readySeconds: number;
  /** Bytes this run took from the upstream registry (all nodes of the run together). */
  upstreamBytes?: number;
};

export const FLOORS = ['stream floor', 'extract floor'] as const;
export type FloorName = (typeof FLOORS)[number];
export type FloorRun = { floor: FloorName; run: number; seconds: number };

export type Spread = { median: number; min: number; max: number };

export type VariantRow = {
  variant: string;
  runs: number;
  /** Median seconds per phase, of the slowest node of each run. */
  phases: Record<Phase, number>;
  /** All nodes of a run Ready: median, min and max over the runs. */
  ready: Spread;
  /** ready.median over the stream floor's median, when the run has one. */
  perStreamFloor?: number;
  upstreamBytes?: Spread;
};

export type FloorRow = { floor: FloorName; runs: number; seconds: Spread; what: string };

export type ReportMeta = {
  image: string;
  preset?: string;
  cores: number;
  concurrent: number;
  runsPerVariant: number;
  startedAt: string;
  /** What each variant is, in a few words, by name. */
  variants: Record<string, string>;
};

export type TimeToReadyReport = { kind: 'time-to-ready'; meta: ReportMeta; rows: VariantRow[]; floors: FloorRow[] };

const FLOOR_WHAT: Record<FloorName, string> = {
  'stream floor': 'curl | pigz -d | tar -x of the squashed layer onto a fresh ext4 disk',
  'extract floor': 'tar -x of the uncompressed content from memory onto a fresh ext4 disk',
};

export function spread(values: number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** Groups the runs by variant (in the order they first appear) and by floor. */
export function summarize(meta: ReportMeta, runs: NodeRun[], floorRuns: FloorRun[]): TimeToReadyReport {
  const floors: FloorRow[] = FLOORS.flatMap((floor) => {
    const seconds = floorRuns.filter((run) => run.floor === floor).map((run) => run.seconds);
    return seconds.length ? [{ floor, runs: seconds.length, seconds: spread(seconds), what: FLOOR_WHAT[floor] }] : [];
  });
  const streamFloor = floors.find((row) => row.floor === 'stream floor')?.seconds.median;
  const variants = [...new Set(runs.map((run) => run.variant))];
  const rows = variants.map((variant): VariantRow => {
    const ofVariant = runs.filter((run) => run.variant === variant);
    // A run is as ready as its slowest node: that node's phases stand for the run.
    const slowest = [...new Set(ofVariant.map((run) => run.run))].map((n) => ofVariant.filter((run) => run.run === n).reduce((a, b) => (b.readySeconds > a.readySeconds ? b : a)));
    const ready = spread(slowest.map((run) => run.readySeconds));
    const bytes = slowest.flatMap((run) => (run.upstreamBytes === undefined ? [] : [run.upstreamBytes]));
    return {
      variant,
      runs: slowest.length,
      phases: Object.fromEntries(PHASES.map((phase) => [phase, median(slowest.map((run) => run.phases[phase]))])) as Record<Phase, number>,
      ready,
      ...(streamFloor && { perStreamFloor: ready.median / streamFloor }),
      ...(bytes.length && { upstreamBytes: spread(bytes) }),
    };
  });
  return { kind: 'time-to-ready', meta, rows, floors };
}

const s = (value: number) => value.toFixed(2);
const range = (spread: Spread) => `${s(spread.median)} (${s(spread.min)}-${s(spread.max)})`;
const mb = (bytes: number) => (bytes / 1e6).toFixed(0);

export function markdown(report: TimeToReadyReport): string {
  const { meta } = report;
  const withBytes = report.rows.some((row) => row.upstreamBytes);
  const header = ['variant', ...PHASES.map((phase) => `${phase} s`), 'Ready s, median (min-max)', '/ stream floor', ...(withBytes ? ['upstream MB'] : [])];
  const rows = report.rows.map((row) => [
    `${row.variant}`,
    ...PHASES.map((phase) => s(row.phases[phase])),
    `**${range(row.ready)}**`,
    row.perStreamFloor ? `${row.perStreamFloor.toFixed(2)}x` : '',
    ...(withBytes ? [row.upstreamBytes ? mb(row.upstreamBytes.median) : ''] : []),
  ]);
  const floorRows = report.floors.map((row) => [`${row.floor}: ${row.what.replaceAll('|', '\\|')}`, ...PHASES.map(() => ''), range(row.seconds), row.floor === 'stream floor' ? '1.00x' : '', ...(withBytes ? [''] : [])]);
  const title = `Time to ready: ${meta.image}${meta.preset ? ` (preset ${meta.preset})` : ''}, ${meta.concurrent} node(s) at once, ${meta.runsPerVariant} run(s) each, ${meta.cores} cores, ${meta.startedAt}`;
  const legend = Object.entries(meta.variants).map(([name, what]) => `- ${name}: ${what}`);
  return [title, '', markdownTable(header, [...rows, ...floorRows]), '', ...legend, ''].join('\n');
}

/** Stacked phases per variant, each floor a dashed rule: a vega-lite spec (rendered by chart.ts). */
export function chartSpec(report: TimeToReadyReport): Record<string, unknown> {
  const values = report.rows.flatMap((row) => PHASES.map((phase, order) => ({ variant: row.variant, phase, order, seconds: row.phases[phase] })));
  const floors = report.floors.map((row) => ({ floor: `${row.floor} ${s(row.seconds.median)} s`, seconds: row.seconds.median }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Time to ready of a cold node', subtitle: `${report.meta.image}, ${report.meta.concurrent} node(s) at once, median of ${report.meta.runsPerVariant} run(s)` },
    width: 560,
    height: { step: 28 },
    layer: [
      {
        data: { values },
        mark: 'bar',
        encoding: {
          y: { field: 'variant', type: 'nominal', sort: null, title: null },
          x: { field: 'seconds', type: 'quantitative', aggregate: 'sum', title: 'seconds from "add a node" to the first container' },
          color: { field: 'phase', type: 'nominal', sort: [...PHASES], title: 'phase', scale: { range: ['#c7c7c7', '#8c8c8c', '#4c78a8', '#f58518', '#54a24b'] } },
          order: { field: 'order' },
        },
      },
      {
        data: { values: floors },
        mark: { type: 'rule', strokeDash: [5, 3], strokeWidth: 2 },
        encoding: { x: { field: 'seconds', type: 'quantitative' }, stroke: { field: 'floor', type: 'nominal', title: 'floor', sort: floors.map((floor) => floor.floor), scale: { range: ['#111111', '#9467bd'] } } },
      },
    ],
    resolve: { scale: { color: 'independent' } },
    config: { legend: { labelLimit: 320 } },
  };
}
