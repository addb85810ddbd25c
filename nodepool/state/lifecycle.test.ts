import assert from 'node:assert/strict';
import { test } from 'node:test';
import { phaseTimes, transition, type Transition } from './lifecycle.js';

function start(): Transition[] {
  let history = transition([], 'Provisioning', new Date(1_000));
  history = transition(history, 'RuntimeReady', new Date(2_500));
  history = transition(history, 'Pulling', new Date(2_600));
  return transition(history, 'Ready', new Date(9_000));
}

test('a start split by the agent start and the pulls into provision, runtime up, download, extract', () => {
  const times = phaseTimes(start(), { agentStartedAt: new Date(1_800).toISOString(), images: [{ downloadMs: 2_000 }, { downloadMs: 1_500 }] });
  assert.deepEqual(times, { runtimeMs: 1_500, pullMs: 6_500, readyMs: 8_000, provisionMs: 800, runtimeUpMs: 700, downloadMs: 3_500, extractMs: 3_000 });
});

test('without the marks only the transition phases; an image verified rather than pulled gives no split', () => {
  assert.deepEqual(phaseTimes(start()), { runtimeMs: 1_500, pullMs: 6_500, readyMs: 8_000 });
  const times = phaseTimes(start(), { agentStartedAt: new Date(1_800).toISOString(), images: [{ downloadMs: 2_000 }, {}] });
  assert.equal(times.downloadMs, undefined);
  assert.equal(times.provisionMs, 800);
});

test('a download longer than the pull (clocks apart) is cut to the pull', () => {
  const times = phaseTimes(start(), { images: [{ downloadMs: 60_000 }] });
  assert.equal(times.downloadMs, 6_500);
  assert.equal(times.extractMs, 0);
});
