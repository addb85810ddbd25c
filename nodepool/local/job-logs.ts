import { BuildfleetError } from '../../imagebuilder/errors.js';

/** The runtime's job logs, pure: its multiplexed frames, timestamped entries, and where a resumed read picks up. */

export type LogStream = 'stdout' | 'stderr';
export type LogFrame = { stream: LogStream | 'system'; payload: Buffer };

/**
 * Pure: splits the runtime's multiplexed log stream into frames (8-byte header: stream, 3 zero
 * bytes, big-endian length). The runtime writes each log entry as one frame, so a frame is one
 * entry with its timestamp, also for a partial line.
 */
export class LogFrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): LogFrame[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: LogFrame[] = [];
    let offset = 0;
    while (this.pending.length - offset >= 8) {
      const size = this.pending.readUInt32BE(offset + 4);
      if (this.pending.length - offset - 8 < size) break;
      const kind = this.pending[offset]!;
      const stream = kind === 1 ? 'stdout' : kind === 2 ? 'stderr' : 'system';
      frames.push({ stream, payload: this.pending.subarray(offset + 8, offset + 8 + size) });
      offset += 8 + size;
    }
    this.pending = this.pending.subarray(offset);
    return frames;
  }

  /** False when the stream stopped inside a frame. */
  get atBoundary(): boolean {
    return this.pending.length === 0;
  }
}

const ENTRY_TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) /;

/** Pure: an entry of a log read with timestamps: its time in nanoseconds since the epoch, and its bytes. */
export function parseLogEntry(payload: Buffer): { at: bigint; text: Buffer } {
  const head = payload.subarray(0, 40).toString('latin1');
  const match = ENTRY_TIMESTAMP.exec(head);
  const seconds = match ? Date.parse(`${match[1]}${match[3]}`) / 1000 : Number.NaN;
  if (!match || !Number.isFinite(seconds)) throw new BuildfleetError('environment', `the runtime sent a log entry without a timestamp: ${JSON.stringify(head)}`);
  const at = BigInt(seconds) * 1_000_000_000n + BigInt((match[2] ?? '').padEnd(9, '0'));
  return { at, text: payload.subarray(match[0].length) };
}

/**
 * Pure: which log entries were delivered, so a read that resumes after a broken stream delivers
 * each entry exactly once. Within a stream the runtime stamps entries in order (equal stamps
 * happen: the pieces of a long line share one), so per stream the last stamp delivered and how
 * many entries carried it say what a replay must skip. Entries of the two streams can be
 * written slightly out of stamp order, so a resumed read starts a margin before the last stamp.
 */
export class LogCursor {
  private readonly streams = {
    stdout: { last: -1n, delivered: 0, seen: 0 },
    stderr: { last: -1n, delivered: 0, seen: 0 },
  };

  constructor(private readonly resumeMarginNs = 1_000_000_000n) {}

  /** Call before each read: a read replays from since(). */
  beginRead(): void {
    for (const stream of Object.values(this.streams)) stream.seen = 0;
  }

  /** True when the entry is new (and counts it as delivered); false for one already delivered. */
  admit(stream: LogStream, at: bigint): boolean {
    const state = this.streams[stream];
    if (at < state.last) return false;
    if (at === state.last) {
      state.seen += 1;
      if (state.seen <= state.delivered) return false;
      state.delivered = state.seen;
      return true;
    }
    state.last = at;
    state.delivered = 1;
    state.seen = 1;
    return true;
  }

  /** The runtime's `since` (seconds.nanoseconds) for the next read; undefined: from the start. */
  since(): string | undefined {
    const last = [this.streams.stdout.last, this.streams.stderr.last].reduce((a, b) => (a > b ? a : b));
    if (last < 0n) return undefined;
    const from = last > this.resumeMarginNs ? last - this.resumeMarginNs : 0n;
    return `${from / 1_000_000_000n}.${(from % 1_000_000_000n).toString().padStart(9, '0')}`;
  }
}
