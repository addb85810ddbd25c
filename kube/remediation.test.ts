import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { drainThenRestart, type RemediationNodes } from './remediation.js';

function recordingNodes(drainError?: Error): { nodes: RemediationNodes; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    nodes: {
      cordon: async (name, reason) => void calls.push(`cordon ${name} ${reason}`),
      uncordon: async (name) => void calls.push(`uncordon ${name}`),
      drain: async (name, { deadlineSeconds }) => {
        calls.push(`drain ${name} ${deadlineSeconds}`);
        if (drainError) throw drainError;
      },
    },
  };
}

const options = (calls: string[], healthy: boolean) => ({
  node: 'n1',
  reason: 'RuntimeUnhealthy',
  deadlineSeconds: 600,
  restartRuntime: async () => void calls.push('restart'),
  runtimeHealthy: async () => healthy,
});

test('a drain past its deadline still restarts the runtime (live-restore keeps the builds); uncordon only when healthy', async () => {
  const late = recordingNodes(new BuildfleetError('conflict', 'drain n1: 600 s passed with 1 pod(s) left: ci/b'));
  assert.deepEqual(await drainThenRestart(late.nodes, options(late.calls, true)), ['cordoned', 'drain-deadline-passed', 'restarted', 'uncordoned']);
  assert.deepEqual(late.calls, ['cordon n1 RuntimeUnhealthy', 'drain n1 600', 'restart', 'uncordon n1']);
  const stuck = recordingNodes();
  assert.deepEqual(await drainThenRestart(stuck.nodes, options(stuck.calls, false)), ['cordoned', 'drained', 'restarted', 'left-cordoned']);
  assert.ok(!stuck.calls.includes('uncordon n1'));
});

test('an API failure during the drain stops the remediation before any restart', async () => {
  const broken = recordingNodes(new BuildfleetError('auth', 'evict pod ci/b: forbidden (HTTP 403)'));
  await assert.rejects(drainThenRestart(broken.nodes, options(broken.calls, true)), /forbidden/);
  assert.deepEqual(broken.calls, ['cordon n1 RuntimeUnhealthy', 'drain n1 600']);
});
