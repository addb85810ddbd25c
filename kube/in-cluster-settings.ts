import { BuildfleetError } from '../imagebuilder/errors.js';
import { poolSpecSchema } from '../nodepool/pool-spec/pool-spec.js';
import { DEFAULT_STARTUP_TAINT, requireDigestReference } from './manifests.js';

/**
 * What `buildfleet agent run --in-cluster` runs with, from its flags and, where a flag is not
 * given, the environment the agent DaemonSet sets (kube/manifests.ts: NODE_NAME from the downward
 * API, BUILDFLEET_*). Pure: flags and env in, settings or one usage error out. The probe,
 * saturation and remediation defaults are the pool spec's (nodepool/pool-spec/), so a node in a
 * cluster is judged as a local node is.
 */

export const RUNTIMES = ['docker', 'cri'] as const;
export type RuntimeKind = (typeof RUNTIMES)[number];

export type InClusterFlags = {
  nodeName?: string;
  runtime?: string;
  runtimeSocket?: string;
  buildImage?: string;
  startupTaint?: string;
  diskstats?: string;
  runtimeDisk?: string;
  workloadDisk?: string;
  probeInterval?: string;
  probeTimeout?: string;
  failureThreshold?: string;
  drainDeadline?: string;
  cooldown?: string;
  restartCommand?: string;
};

export type InClusterSettings = {
  nodeName: string;
  /** auto: decided from what answers on the socket. */
  runtime: RuntimeKind | 'auto';
  runtimeSocket: string;
  /** REF@sha256:... and its digest; without it the startup taint is left to others. */
  buildImage: { reference: string; digest: string } | undefined;
  startupTaintKey: string;
  diskstatsPath: string;
  /** Mount points of the two disks inside the agent's container (the DaemonSet's hostPath mounts). */
  disks: { runtime: string; workload: string };
  probe: { intervalSeconds: number; timeoutSeconds: number; failureThreshold: number };
  saturation: ReturnType<typeof poolSpecSchema.shape.saturation.parse>;
  remediation: { drainDeadlineSeconds: number; cooldownSeconds: number };
  /** Run by `sh -c` to restart a hung runtime (on a node: systemd through the host's namespaces). */
  restartCommand: string;
};

/** The paths the agent DaemonSet mounts (kube/manifests.ts). */
export const IN_CLUSTER_DEFAULTS = {
  runtimeSocket: '/host/run/runtime.sock',
  diskstats: '/host/proc/diskstats',
  runtimeDisk: '/host/runtime-disk',
  workloadDisk: '/host/workload-disk',
};

/** systemd's unit for the runtime, in the host's namespaces (needs hostPID and privilege in the pod). */
export function defaultRestartCommand(runtime: RuntimeKind | 'auto'): string {
  return `nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart ${runtime === 'docker' ? 'docker' : 'containerd'}`;
}

function seconds(value: string | undefined, flag: string, fallback: number, integer = false): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (integer && (!Number.isInteger(n) || n < 1))) {
    throw new BuildfleetError('usage', `${flag} ${JSON.stringify(value)}: give ${integer ? 'a whole number of at least 1' : 'a number of seconds, 0 or more'}`);
  }
  return n;
}

export function inClusterSettings(flags: InClusterFlags, env: NodeJS.ProcessEnv): InClusterSettings {
  const nodeName = flags.nodeName ?? env.NODE_NAME;
  if (!nodeName) throw new BuildfleetError('usage', 'the agent in a cluster needs its node\'s name: --node-name NAME, or NODE_NAME (the DaemonSet sets it from spec.nodeName)');
  const runtime = flags.runtime ?? env.BUILDFLEET_RUNTIME;
  if (runtime !== undefined && runtime !== 'auto' && !(RUNTIMES as readonly string[]).includes(runtime)) {
    throw new BuildfleetError('usage', `--runtime ${JSON.stringify(runtime)}: give cri (containerd's CRI API), docker (the Docker Engine API) or auto`);
  }
  const reference = flags.buildImage ?? env.BUILDFLEET_BUILD_IMAGE;
  const buildImage = reference ? { reference: requireDigestReference(reference, '--build-image'), digest: reference.slice(reference.lastIndexOf('@') + 1) } : undefined;
  const spec = { probe: poolSpecSchema.shape.probe.parse({}), remediation: poolSpecSchema.shape.remediation.parse({}) };
  const kind = (runtime ?? 'auto') as RuntimeKind | 'auto';
  return {
    nodeName,
    runtime: kind,
    runtimeSocket: flags.runtimeSocket ?? env.BUILDFLEET_RUNTIME_SOCKET ?? IN_CLUSTER_DEFAULTS.runtimeSocket,
    buildImage,
    startupTaintKey: flags.startupTaint ?? env.BUILDFLEET_STARTUP_TAINT ?? DEFAULT_STARTUP_TAINT,
    diskstatsPath: flags.diskstats ?? env.BUILDFLEET_DISKSTATS ?? IN_CLUSTER_DEFAULTS.diskstats,
    disks: { runtime: flags.runtimeDisk ?? IN_CLUSTER_DEFAULTS.runtimeDisk, workload: flags.workloadDisk ?? IN_CLUSTER_DEFAULTS.workloadDisk },
    probe: {
      intervalSeconds: seconds(flags.probeInterval, '--probe-interval', spec.probe.intervalSeconds),
      timeoutSeconds: seconds(flags.probeTimeout, '--probe-timeout', spec.probe.timeoutSeconds),
      failureThreshold: seconds(flags.failureThreshold, '--failure-threshold', spec.probe.failureThreshold, true),
    },
    saturation: poolSpecSchema.shape.saturation.parse({}),
    remediation: {
      drainDeadlineSeconds: seconds(flags.drainDeadline, '--drain-deadline', spec.remediation.drainTimeoutSeconds),
      cooldownSeconds: seconds(flags.cooldown, '--cooldown', spec.remediation.cooldownSeconds),
    },
    restartCommand: flags.restartCommand ?? env.BUILDFLEET_RESTART_COMMAND ?? defaultRestartCommand(kind),
  };
}
