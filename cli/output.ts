import cliProgress from 'cli-progress';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { errorReport, formatErrorReport } from './errors.js';
import type { ProgressListener } from '../imagebuilder/transports/types.js';

export type OutputOptions = { json?: boolean; quiet?: boolean };

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Left-aligned columns, as `docker images` prints them. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('   ').trimEnd()).join('\n');
}

/** Progress bars only on a terminal, never with --json or --quiet (CI logs want no carriage returns). */
export function showsProgress(options: OutputOptions): boolean {
  return !options.json && !options.quiet && process.stderr.isTTY === true;
}

/**
 * A byte progress bar on a terminal; nothing otherwise (CI logs want no carriage returns).
 * Call `finish()` before printing results.
 */
export function progressBar(label: string, options: OutputOptions): { listener: ProgressListener; setTotal(bytes: number): void; finish(): void } {
  if (!showsProgress(options)) {
    return { listener: () => {}, setTotal: () => {}, finish: () => {} };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done} / {all} | blobs {blobsDone}/{blobs}`,
      hideCursor: true,
      clearOnComplete: true,
      barsize: 30,
    },
    cliProgress.Presets.shades_classic,
  );
  let total = 0;
  let value = 0;
  let blobs = 0;
  let blobsDone = 0;
  const sizes = new Map<string, number>();
  const update = () => bar.update(value, { done: formatBytes(value), all: formatBytes(total), blobs, blobsDone });
  bar.start(1, 0, { done: '0 B', all: '?', blobs: 0, blobsDone: 0 });
  return {
    listener: (event) => {
      if (event.kind === 'blob-start') {
        blobs++;
        if (event.size !== undefined) {
          sizes.set(event.digest, event.size);
          total += event.size;
          bar.setTotal(Math.max(total, 1));
        }
      } else if (event.kind === 'blob-bytes') {
        value += event.bytes;
      } else if (event.kind === 'blob-done') {
        blobsDone++;
        if (event.skipped) value += sizes.get(event.digest) ?? 0;
      }
      update();
    },
    setTotal: (bytes) => {
      total = bytes;
      bar.setTotal(Math.max(bytes, 1));
    },
    finish: () => bar.stop(),
  };
}

/** One line (or with --json one JSON object) on stderr and an exit code a CI can act on; a stack only for real bugs. */
export function reportError(err: unknown, options: { json: boolean; command: string }): number {
  const report = errorReport(err, options.command);
  if (!report) return 0;
  process.stderr.write(formatErrorReport(report, options.json));
  return report.exitCode;
}

export { BuildfleetError };
