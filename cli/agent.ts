import type { Command } from 'commander';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { printJson } from './output.js';
import type { InClusterFlags } from '../kube/in-cluster-settings.js';

/**
 * `buildfleet agent run --in-cluster`: the flags of the agent as a Kubernetes DaemonSet pod
 * (kube/in-cluster-agent.ts). Every flag falls back to the environment the DaemonSet of
 * `buildfleet kube manifests` sets, so its args stay `agent run --in-cluster`.
 */

/** The local agent's flag, --in-cluster and --dry-run, and the in-cluster agent's own. */
export type AgentRunFlags = InClusterFlags & { nodeDir?: string; inCluster?: boolean; dryRun?: boolean };

export function addInClusterOptions(command: Command): Command {
  return command
    .option('--in-cluster', 'run as a Kubernetes DaemonSet pod: conditions, Events, the startup taint and remediation through the API (service account, or KUBECONFIG)')
    .option('--dry-run', 'with --in-cluster: print the settings it would run with (flags and environment resolved) and exit')
    .option('--node-name <name>', 'the node this pod runs on (default: $NODE_NAME, from the downward API)')
    .option('--runtime <kind>', 'cri (containerd\'s CRI API), docker (the Docker Engine API) or auto (default: $BUILDFLEET_RUNTIME, else auto: what answers on the socket)')
    .option('--runtime-socket <path>', 'the runtime\'s socket (default: $BUILDFLEET_RUNTIME_SOCKET, else /host/run/runtime.sock)')
    .option('--build-image <ref@sha256:...>', 'the pre-pulled build image; its digest in node.status.images lifts the startup taint (default: $BUILDFLEET_BUILD_IMAGE)')
    .option('--startup-taint <key>', 'the startup taint to remove (default: $BUILDFLEET_STARTUP_TAINT)')
    .option('--diskstats <path>', 'the node\'s /proc/diskstats (default: $BUILDFLEET_DISKSTATS, else /host/proc/diskstats)')
    .option('--runtime-disk <path>', 'where the runtime\'s disk is mounted in the pod', '/host/runtime-disk')
    .option('--workload-disk <path>', 'where the workload disk is mounted in the pod', '/host/workload-disk')
    .option('--probe-interval <seconds>', 'between runtime probes (default: the pool spec\'s, 10)')
    .option('--probe-timeout <seconds>', 'a probe without an answer by then failed (default 10)')
    .option('--failure-threshold <n>', 'failed probes in a row before the runtime counts as hung (default 3)')
    .option('--drain-deadline <seconds>', 'how long evictions may wait for budgets before the runtime restarts anyway (default 600)')
    .option('--cooldown <seconds>', 'no second restart within this time (default 600)')
    .option('--restart-command <sh>', 'how to restart the node\'s runtime (default: $BUILDFLEET_RESTART_COMMAND, else systemctl restart through nsenter into PID 1\'s namespaces)');
}

export async function runAgentCommand(flags: AgentRunFlags, json: boolean): Promise<void> {
  if (flags.inCluster && flags.nodeDir) throw new BuildfleetError('usage', 'give --node-dir DIR (a local node) or --in-cluster (a Kubernetes node), not both');
  if (!flags.inCluster) {
    if (!flags.nodeDir) throw new BuildfleetError('usage', 'give --node-dir DIR (a local node) or --in-cluster (a Kubernetes node)');
    const { runAgent } = await import('../nodepool/agent/agent.js');
    return runAgent(flags.nodeDir);
  }
  const { inClusterSettings } = await import('../kube/in-cluster-settings.js');
  const settings = inClusterSettings(flags, process.env);
  if (flags.dryRun) {
    if (json) printJson(settings);
    else process.stdout.write(`${Object.entries(settings).map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`).join('\n')}\n`);
    return;
  }
  const { runInClusterAgent } = await import('../kube/in-cluster-run.js');
  await runInClusterAgent(settings);
}
