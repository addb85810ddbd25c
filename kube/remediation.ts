import { isBuildfleetError } from '../imagebuilder/errors.js';

/**
 * The drain-then-restart remediation through the Kubernetes API, for a node whose runtime hung:
 * cordon (no new builds), drain (evictions within each pod's budget, up to the deadline), restart
 * the runtime (how is the caller's: the agent's runtime host), and uncordon only once the runtime
 * answers again. A drain that reaches its deadline does not stop the restart: with live-restore the
 * builds still running survive it, which is why the deadline exists. A node whose runtime stays
 * down stays cordoned.
 */

export type RemediationNodes = {
  cordon(name: string, reason: string): Promise<void>;
  uncordon(name: string): Promise<void>;
  drain(name: string, options: { deadlineSeconds: number }): Promise<void>;
};

export type RemediationStep = 'cordoned' | 'drained' | 'drain-deadline-passed' | 'restarted' | 'uncordoned' | 'left-cordoned';

export type RemediationOptions = {
  node: string;
  reason: string;
  deadlineSeconds: number;
  restartRuntime: () => Promise<void>;
  runtimeHealthy: () => Promise<boolean>;
  log?: (line: string) => void;
};

export async function drainThenRestart(nodes: RemediationNodes, options: RemediationOptions): Promise<RemediationStep[]> {
  const steps: RemediationStep[] = [];
  const step = (name: RemediationStep, detail = '') => {
    steps.push(name);
    options.log?.(`remediation ${options.node}: ${name}${detail ? `: ${detail}` : ''}`);
  };
  await nodes.cordon(options.node, options.reason);
  step('cordoned', options.reason);
  try {
    await nodes.drain(options.node, { deadlineSeconds: options.deadlineSeconds });
    step('drained');
  } catch (err) {
    // Only the deadline is expected here; an API failure stops the remediation, node cordoned.
    if (!isBuildfleetError(err) || err.kind !== 'conflict') throw err;
    step('drain-deadline-passed', err.message);
  }
  await options.restartRuntime();
  step('restarted');
  if (await options.runtimeHealthy()) {
    await nodes.uncordon(options.node);
    step('uncordoned');
  } else step('left-cordoned', 'the runtime does not answer after its restart');
  return steps;
}
