import { readFile } from 'node:fs/promises';

/** Small statistics and table helpers shared by the benchmarks. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length === 0 ? NaN : sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function seconds(ms: number): string {
  return (ms / 1000).toFixed(2);
}

/**
 * CPU seconds the whole host spent busy (user, nice, system, irq, softirq: not idle, iowait or
 * what a hypervisor stole), from /proc/stat: read it before and after, and the difference is what a run cost
 * every process together, ours and the daemons'. Undefined where /proc/stat is not Linux's.
 */
export async function hostBusyCpuSeconds(): Promise<number | undefined> {
  const text = await readFile('/proc/stat', 'utf8').catch(() => '');
  return busyCpuSeconds(text);
}

/** The busy seconds in /proc/stat's first line (clock ticks of 1/100 s, as on every Linux we run). */
export function busyCpuSeconds(procStat: string): number | undefined {
  const fields = /^cpu\s+(.*)$/m.exec(procStat)?.[1]?.trim().split(/\s+/).map(Number);
  if (!fields || fields.length < 7 || fields.some((n) => !Number.isFinite(n))) return undefined;
  const [user, nice, system, , , irq, softirq] = fields as [number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq) / 100;
}

/**
 * Waits until the host has been quiet (at most `busyShare` of its cores busy) for one second,
 * or `timeoutMs` passed: a run should not pay for the one before it (a deleted node's
 * writeback, its freed blocks, reclaim). Returns the seconds waited.
 */
export async function waitForQuietHost(cores: number, options: { busyShare?: number; timeoutMs?: number } = {}): Promise<number> {
  const { busyShare = 0.1, timeoutMs = 60_000 } = options;
  const started = performance.now();
  let before = await hostBusyCpuSeconds();
  if (before === undefined) return 0;
  while (performance.now() - started < timeoutMs) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const now = (await hostBusyCpuSeconds())!;
    if (now - before <= busyShare * cores) break;
    before = now;
  }
  return (performance.now() - started) / 1000;
}
