/**
 * The signals of disk saturation, pure: the same node-problem-detector exports but never turns
 * into a condition, utilisation (diskstats field 13, ms spent doing I/O) and average queue depth
 * (field 14, weighted ms), each over a sliding window; the share of the disk's I/O budget in use
 * (sectors and requests per second against its throttles); plus space and inodes; and the Saturated
 * condition's hysteresis. Reading diskstats and statfs is `disk-detector.ts`'s.
 */

export type DiskCounters = { ioTicksMs: number; weightedMs: number; readsCompleted: number; writesCompleted: number; sectorsRead: number; sectorsWritten: number };

/** A disk's I/O budget (its blkio throttles), per second; 0 = no limit. */
export type IoBudget = { readBytesPerSecond: number; writeBytesPerSecond: number; iops: number };

/** diskstats counts 512-byte sectors whatever the device's own sector size. */
const SECTOR_BYTES = 512;

/** /proc/diskstats by device name (loop0, vda...). Fields per Documentation/admin-guide/iostats.rst. */
export function parseDiskstats(text: string): Map<string, DiskCounters> {
  const devices = new Map<string, DiskCounters>();
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 14) continue;
    // fields[0..2] = major, minor, name; then the numbered fields 1..: field N is fields[N + 2].
    devices.set(fields[2]!, {
      readsCompleted: Number(fields[3]),
      sectorsRead: Number(fields[5]),
      writesCompleted: Number(fields[7]),
      sectorsWritten: Number(fields[9]),
      ioTicksMs: Number(fields[12]),
      weightedMs: Number(fields[13]),
    });
  }
  return devices;
}

export type DiskSample = DiskCounters & { atMs: number };

/** Utilisation and queue depth over the samples of the last `windowMs`. */
export class DiskWindow {
  private samples: DiskSample[] = [];

  constructor(private readonly windowMs: number) {}

  add(sample: DiskSample): void {
    this.samples.push(sample);
    // Keep one sample at or before the window's start, so the window is fully covered.
    while (this.samples.length > 2 && this.samples[1]!.atMs <= sample.atMs - this.windowMs) this.samples.shift();
  }

  /** Share of the window the device was busy, 0..1; undefined until two samples exist. */
  get utilization(): number | undefined {
    const span = this.span();
    if (!span) return undefined;
    return Math.min(1, Math.max(0, (span.last.ioTicksMs - span.first.ioTicksMs) / span.ms));
  }

  /** Average requests in flight over the window. */
  get queueDepth(): number | undefined {
    const span = this.span();
    if (!span) return undefined;
    return Math.max(0, (span.last.weightedMs - span.first.weightedMs) / span.ms);
  }

  /**
   * Share of the disk's budget used over the window, 0..1: the highest of bytes read, bytes
   * written, reads and writes per second against their limits (0 without a budget). A disk held
   * at its budget is saturated as a cloud disk at its limit is, though the requests it holds back
   * wait in the throttle, before the device, where utilisation and queue depth do not see them.
   */
  budgetShare(budget: IoBudget): number | undefined {
    const span = this.span();
    if (!span) return undefined;
    const perSecond = (counter: keyof DiskCounters) => ((span.last[counter] - span.first[counter]) * 1000) / span.ms;
    const shares = [
      budget.readBytesPerSecond ? (perSecond('sectorsRead') * SECTOR_BYTES) / budget.readBytesPerSecond : 0,
      budget.writeBytesPerSecond ? (perSecond('sectorsWritten') * SECTOR_BYTES) / budget.writeBytesPerSecond : 0,
      budget.iops ? perSecond('readsCompleted') / budget.iops : 0,
      budget.iops ? perSecond('writesCompleted') / budget.iops : 0,
    ];
    return Math.min(1, Math.max(0, ...shares));
  }

  private span(): { first: DiskSample; last: DiskSample; ms: number } | undefined {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.atMs <= first.atMs) return undefined;
    return { first, last, ms: last.atMs - first.atMs };
  }
}

export type SaturationThresholds = { utilization: number; queueDepth: number; clearUtilization: number; clearQueueDepth: number; minFreeRatio: number };
export type DiskReading = { utilization: number; queueDepth: number; freeBytesRatio: number; freeInodesRatio: number };

/**
 * The Saturated condition with hysteresis: it is set when utilisation or queue depth reaches
 * its threshold (or space or inodes run low), and cleared only when both fall below their
 * lower clear thresholds, so a disk near the line does not flap.
 */
export class SaturationCondition {
  saturated = false;
  /** Why it was last set, CamelCase (DiskBusy, DiskLowOnSpace); DiskCalm once cleared. */
  reason = 'DiskCalm';
  /** What was measured when it was last set, in words; kept after it clears (the calm event names what passed). */
  message = '';

  constructor(private readonly thresholds: SaturationThresholds) {}

  /** Returns true when the condition changed. */
  update(reading: DiskReading): boolean {
    const t = this.thresholds;
    const lowSpace = reading.freeBytesRatio < t.minFreeRatio || reading.freeInodesRatio < t.minFreeRatio;
    const busy = reading.utilization >= t.utilization || reading.queueDepth >= t.queueDepth;
    const calm = reading.utilization < t.clearUtilization && reading.queueDepth < t.clearQueueDepth;
    const next = this.saturated ? lowSpace || !calm : lowSpace || busy;
    if (next) {
      this.reason = lowSpace ? 'DiskLowOnSpace' : 'DiskBusy';
      this.message = lowSpace
        ? `free space ${(reading.freeBytesRatio * 100).toFixed(1)}%, inodes ${(reading.freeInodesRatio * 100).toFixed(1)}%`
        : `utilisation ${(reading.utilization * 100).toFixed(0)}%, queue depth ${reading.queueDepth.toFixed(1)}`;
    } else {
      this.reason = 'DiskCalm';
    }
    const changed = next !== this.saturated;
    this.saturated = next;
    return changed;
  }
}
