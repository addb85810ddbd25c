import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { gkeSpec } from '../test/fakes/gke/connect.js';
import { StateStore } from '../nodepool/state/store.js';
import { registerPoolCommands } from './pool.js';

// pool roll on a GKE pool: refused with one line before any registry or API call (the images are
// the pre-pull DaemonSet's; GKE nodes are not rolled one by one).

test('pool roll of a GKE pool is refused, naming what to do instead', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pool-gke-'));
  try {
    const now = new Date().toISOString();
    await new StateStore(dir).claimPool({ spec: gkeSpec(), createdAt: now, updatedAt: now });
    const program = new Command().exitOverride();
    registerPoolCommands(program, () => ({ json: false, quiet: true, insecure: [] }));
    await assert.rejects(program.parseAsync(['pool', '--state-dir', dir, 'roll', 'ci', '--image', 'reg.example/ci/build:2'], { from: 'user' }), (err: Error & { kind?: string }) => {
      assert.equal(err.kind, 'unsupported');
      assert.match(err.message, /^pool roll: on GKE .*kube manifests/);
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
