import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { runCli } from '../test/helpers/real.js';

// The README's main job, run as a user runs it (real Docker Engines and registry; root).
test('quickstart runs the main job end to end and reports every step', { timeout: 300_000 }, async () => {
  const result = await runCli(['--json', 'quickstart']);
  assert.equal(result.exitCode, 0, result.stderr);
  const report = JSON.parse(result.stdout) as { layers: number; steps: Array<{ step: string; ms: number; detail: string }> };
  assert.equal(report.layers, 5);
  const steps = report.steps.map((s) => s.step);
  for (const expected of ['docker build', 'push to registry (buildfleet)', 'copy to OCI layout', 'squash to one layer (buildfleet)', 'create a dual-disk node (local pool)', 'first build job on the node', 'delete the pool']) {
    assert.ok(steps.includes(expected), `step "${expected}" in ${steps.join(', ')}`);
  }
  assert.match(report.steps.find((s) => s.step === 'squash to one layer (buildfleet)')?.detail ?? '', /^5 -> 1 layers, 4\.2 MB shadowed/, 'the deleted ruby tarball is dropped');
  // The node's time-to-ready by phase, then its pre-pull beside the stream floor of the same layer.
  assert.match(report.steps.find((s) => s.step === 'create a dual-disk node (local pool)')?.detail ?? '', /^quickstart-n1 Ready in [\d.]+ s: provision [\d.]+ s, download [\d.]+ s, extract [\d.]+ s, runtime up [\d.]+ s$/);
  assert.match(report.steps.find((s) => s.step === 'stream floor: curl | pigz -d | tar -x')?.detail ?? '', /^[\d.]+ s onto a fresh disk; the node's pre-pull \(download \+ extract\) took [\d.]+ s, [\d.]+x the floor$/);
  assert.equal(report.steps.find((s) => s.step === 'first build job on the node')?.detail, 'quickstart-n1, exit 0, output: 400', 'the squashed image runs on the new node');
  const mounts = await readFile('/proc/mounts', 'utf8');
  assert.ok(!mounts.includes('buildfleet-quickstart-'), 'nothing left mounted');
});
