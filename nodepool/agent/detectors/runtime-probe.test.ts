import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HangDetector } from './runtime-probe.js';

test('a hang is N consecutive failures; one success resets the count', () => {
  const detector = new HangDetector(3);
  assert.equal(detector.record(false), false);
  assert.equal(detector.record(false), false);
  assert.equal(detector.record(true), false);
  assert.equal(detector.record(false), false);
  assert.equal(detector.record(false), false);
  assert.equal(detector.record(false), true);
  assert.equal(detector.consecutiveFailures, 3);
  const fieldMonitor = new HangDetector(1);
  assert.equal(fieldMonitor.record(false), true, 'the field\'s monitor acts on the first failure');
});
