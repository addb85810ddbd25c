import { markdownTable, median } from '../stats.js';

/**
 * The time-to-ready report, pure: runs in, a summary, a Markdown table and a vega-lite chart
 * spec out. The benchmark measures; this only arranges, so its shape is tested without a node.
 */

/** A cold node's way to Ready, in the order it goes. */
export const PHASES = ['provision', 'runtime up', 'download', 'decompress + extract', 'first run'] as const;
export type Phase = (typeof PHASES)[number];
/**
 * The phases in the order a variant's node goes through them: the direct pre-pull writes the
 * image store before the runtime starts on it, so its "runtime up" comes after the pull.
 */
export function phaseOrder(variant: string): readonly Phase[] {
  return variant.endsWith('-direct') ? ['provision', 'download', 'decompress + extract', 'runtime up', 'first run'] : PHASES;
}

/** The phases a pre-pull takes: what the floors are measured against. */
export const PULL_PHASES = ['download', 'decompress + extract'] as const satisfies readonly Phase[];

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
  /** CPU seconds the whole host was busy from "add the nodes" to their first containers (all nodes of the run together). */
  hostCpuSeconds?: number;
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
  /** The pre-pull (download + decompress + extract), median over the slowest node of each run. */
  pull: Spread;
  /** pull.median over the stream floor's median, when the run has one: what the goals are stated in. */
  pullPerStreamFloor?: number;
  upstreamBytes?: Spread;
  /** The host's busy CPU seconds per run: over the cores, the shortest a CPU-bound run could be. */
  hostCpuSeconds?: Spread;
};

export type FloorRow = { floor: FloorName; runs: number; seconds: Spread; what: string };

export type ReportMeta = {
  image: string;
  preset?: string;
  cores: number;
  concurrent: number;
  /** The cap on the upstream link (megabits per second, shared by all nodes), when there was one. */
  upstreamMbps?: number;
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

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

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
    const pull = spread(slowest.map((run) => PULL_PHASES.reduce((sum, phase) => sum + run.phases[phase], 0)));
    const bytes = slowest.flatMap((run) => (run.upstreamBytes === undefined ? [] : [run.upstreamBytes]));
    const cpu = slowest.flatMap((run) => (run.hostCpuSeconds === undefined ? [] : [run.hostCpuSeconds]));
    return {
      variant,
      runs: slowest.length,
      phases: Object.fromEntries(PHASES.map((phase) => [phase, median(slowest.map((run) => run.phases[phase]))])) as Record<Phase, number>,
      ready,
      pull,
      ...(streamFloor && { pullPerStreamFloor: pull.median / streamFloor }),
      ...(bytes.length && { upstreamBytes: spread(bytes) }),
      ...(cpu.length && { hostCpuSeconds: spread(cpu) }),
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
  const withCpu = report.rows.some((row) => row.hostCpuSeconds);
  const header = [
    'variant',
    ...PHASES.map((phase) => `${phase} s`),
    'Ready s, median (min-max)',
    'pull s',
    'pull / stream floor',
    ...(withBytes ? ['upstream MB'] : []),
    ...(withCpu ? ['host CPU s', `host CPU / ${meta.cores} cores s`] : []),
  ];
  const rows = report.rows.map((row) => [
    `${row.variant}`,
    ...PHASES.map((phase) => s(row.phases[phase])),
    `**${range(row.ready)}**`,
    range(row.pull),
    row.pullPerStreamFloor ? `${row.pullPerStreamFloor.toFixed(2)}x` : '',
    ...(withBytes ? [row.upstreamBytes ? mb(row.upstreamBytes.median) : ''] : []),
    ...(withCpu ? (row.hostCpuSeconds ? [s(row.hostCpuSeconds.median), s(row.hostCpuSeconds.median / meta.cores)] : ['', '']) : []),
  ]);
  const floorRows = report.floors.map((row) => [
    `${row.floor}: ${row.what.replaceAll('|', '\\|')}`,
    ...PHASES.map(() => ''),
    '',
    range(row.seconds),
    row.floor === 'stream floor' ? '1.00x' : '',
    ...(withBytes ? [''] : []),
    ...(withCpu ? ['', ''] : []),
  ]);
  const link = meta.upstreamMbps ? `, upstream capped at ${meta.upstreamMbps} Mbit/s` : '';
  const title = `Time to ready: ${meta.image}, ${meta.concurrent} node(s) at once${link}, ${meta.runsPerVariant} run(s) each, ${meta.cores} cores, ${meta.startedAt}. The floors are pulls only: compare them with the pull column.${withCpu ? ' Host CPU: what every process on the host spent from "add the nodes" to their first containers; over the cores, the shortest that run could be if the CPU were its only limit.' : ''}`;
  const legend = Object.entries(meta.variants).map(([name, what]) => `- ${name}: ${what}`);
  return [title, '', markdownTable(header, [...rows, ...floorRows]), '', ...legend, ''].join('\n');
}

/** Stacked phases per variant; each floor a bar of its own (a pull only, so it lines up with download + extract). */
export function chartSpec(report: TimeToReadyReport): Record<string, unknown> {
  const bars = report.rows.flatMap((row) => phaseOrder(row.variant).map((phase, order) => ({ row: row.variant, phase, order, seconds: row.phases[phase] })));
  // A floor bar starts where the variants' pulls start (the median of what comes before each one's download), so its end reads against theirs.
  const before = median(
    report.rows.map((row) => {
      const order = phaseOrder(row.variant);
      return sum(order.slice(0, order.indexOf('download')).map((phase) => row.phases[phase]));
    }),
  );
  const floorBars = report.floors.flatMap((row) => [
    { row: `${row.floor} (pull only)`, phase: 'before the pull (of the variants)', order: 0, seconds: Number.isFinite(before) ? before : 0 },
    { row: `${row.floor} (pull only)`, phase: row.floor, order: 1, seconds: row.seconds.median },
  ]);
  const domain = [...PHASES, 'before the pull (of the variants)', ...report.floors.map((row) => row.floor)];
  const colors = ['#bab0ac', '#9d755d', '#4c78a8', '#f58518', '#54a24b', '#ffffff', '#e45756', '#b279a2'];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Time to ready of a cold node', subtitle: `${report.meta.image}, ${report.meta.concurrent} node(s) at once, median of ${report.meta.runsPerVariant} run(s)` },
    width: 560,
    height: { step: 28 },
    data: { values: [...bars, ...floorBars] },
    mark: { type: 'bar', stroke: '#ffffff', strokeWidth: 0.5 },
    encoding: {
      y: { field: 'row', type: 'nominal', sort: null, title: null, axis: { labelLimit: 260 } },
      x: { field: 'seconds', type: 'quantitative', aggregate: 'sum', title: 'seconds from "add a node" to the first container' },
      color: { field: 'phase', type: 'nominal', title: 'phase', scale: { domain, range: colors.slice(0, domain.length) } },
      order: { field: 'order' },
    },
    config: { legend: { labelLimit: 320 } },
  };
}
