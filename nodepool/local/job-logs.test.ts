import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogCursor, LogFrameDecoder, parseLogEntry, type LogStream } from './job-logs.js';
import { BuildfleetError } from '../../imagebuilder/errors.js';

const frame = (kind: number, text: string) => {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = kind;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
};

test('log frames are split out of chunks cut anywhere, a stream cut inside a frame is not at a boundary', () => {
  const bytes = Buffer.concat([frame(1, '2026-12-05T10:00:00.000000001Z out\n'), frame(2, '2026-12-05T10:00:00.000000002Z err\n'), frame(3, 'Error grabbing logs: x\n')]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const decoder = new LogFrameDecoder();
    const frames = [...decoder.push(bytes.subarray(0, cut)), ...decoder.push(bytes.subarray(cut))];
    assert.deepEqual(frames.map((f) => [f.stream, f.payload.toString()]), [
      ['stdout', '2026-12-05T10:00:00.000000001Z out\n'],
      ['stderr', '2026-12-05T10:00:00.000000002Z err\n'],
      ['system', 'Error grabbing logs: x\n'],
    ]);
    assert.equal(decoder.atBoundary, true);
  }
  const cutShort = new LogFrameDecoder();
  assert.deepEqual(cutShort.push(bytes.subarray(0, 12)), []);
  assert.equal(cutShort.atBoundary, false);
});

test('a log entry gives its time in nanoseconds (any zone) and its bytes as written, partial lines too', () => {
  const entry = parseLogEntry(Buffer.from('2026-12-05T10:00:01.123456789Z  two spaces, no newline'));
  assert.equal(entry.at, BigInt(Date.parse('2026-12-05T10:00:01Z') / 1000) * 1_000_000_000n + 123456789n);
  assert.equal(entry.text.toString(), ' two spaces, no newline');
  assert.equal(parseLogEntry(Buffer.from('2026-12-05T11:00:01.123456789+01:00 x\n')).at, entry.at);
  assert.throws(() => parseLogEntry(Buffer.from('out 1\n')), (err: unknown) => err instanceof BuildfleetError && /without a timestamp/.test(err.message));
});

test('a resumed log read delivers each entry exactly once, with equal stamps and streams out of stamp order', () => {
  const s = 1_000_000_000n;
  // What the runtime has logged, in file order: a long line's pieces share a stamp; stderr's
  // entry at 10.4 s was written after stdout's at 10.5 s.
  const logged: [LogStream, bigint, string][] = [
    ['stdout', 10n * s, 'a'],
    ['stdout', 10n * s + 5n, 'b1'],
    ['stdout', 10n * s + 5n, 'b2'],
    ['stdout', 10n * s + s / 2n, 'c'],
    ['stderr', 10n * s + (4n * s) / 10n, 'e'],
    ['stdout', 12n * s, 'd'],
    ['stdout', 12n * s, 'd2'],
  ];
  const replayFrom = (since: string | undefined) => {
    const [sec, nano] = (since ?? '0.0').split('.');
    const from = BigInt(sec!) * s + BigInt(nano!);
    return logged.filter(([, at]) => at >= from);
  };
  // Reads that break after each possible number of entries, then one that reads to the end.
  for (let breakAfter = 0; breakAfter <= logged.length; breakAfter++) {
    for (let secondBreak = 0; secondBreak <= logged.length; secondBreak++) {
      const cursor = new LogCursor();
      const delivered: string[] = [];
      const read = (limit: number) => {
        const since = cursor.since();
        cursor.beginRead();
        for (const [stream, at, text] of replayFrom(since).slice(0, limit)) if (cursor.admit(stream, at)) delivered.push(text);
      };
      read(breakAfter);
      read(secondBreak);
      read(Infinity);
      assert.deepEqual(delivered, logged.map(([, , text]) => text), `breaks after ${breakAfter} and ${secondBreak}`);
    }
  }
  assert.equal(new LogCursor().since(), undefined, 'nothing delivered: read from the start');
});
