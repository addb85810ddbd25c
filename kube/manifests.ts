import { stringify } from 'yaml';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { parseReference } from '../imagebuilder/oci/reference.js';

/**
 * What `buildfleet kube manifests` prints for `kubectl apply`: a namespace, the agent's service
 * account with least-privilege RBAC, the agent DaemonSet and the pre-pull DaemonSet of one pool.
 * Pure: objects in, YAML out.
 */

/** The label the GKE provider puts on a pool's nodes (nodepool/gke/requests.ts POOL_LABEL). */
export const POOL_LABEL = 'buildfleet.io/pool';
export const DEFAULT_STARTUP_TAINT = 'startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull';
/** The first local NVMe SSD of a GKE node with localNvmeSsdBlockConfig, by its stable name. */
export const DEFAULT_WORKLOAD_DEVICE = '/dev/disk/by-id/google-local-nvme-ssd-0';
export const WORKLOAD_MOUNT = '/mnt/buildfleet/workload';

export type ManifestSettings = {
  pool: string;
  namespace: string;
  /** The build image by digest (REF@sha256:...): what the pre-pull DaemonSet keeps on every node. */
  buildImage: string;
  agentImage: string;
  startupTaintKey: string;
  /** containerd's socket on the node (GKE nodes run containerd). */
  runtimeSocket: string;
  /** Where the runtime keeps images and layers: the runtime (boot) disk. */
  runtimeDataDir: string;
  /** The workload disk as a raw block device; formatted (when blank) and mounted at WORKLOAD_MOUNT. */
  workloadDevice: string;
};

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [field: string]: unknown };

export function requireDigestReference(reference: string, what: string): string {
  let parsed;
  try {
    parsed = parseReference(reference);
  } catch (err) {
    throw new BuildfleetError('usage', `${what}: ${(err as Error).message}`);
  }
  if (parsed.transport !== 'registry' || !parsed.digest) {
    throw new BuildfleetError('usage', `${what}: ${reference} is not pinned by digest; give REPOSITORY@sha256:... (a tag can move, and every node must hold the same bytes)`);
  }
  return reference;
}

/** The RBAC rules, exactly what the agent and the remediation call (see README.md). */
export const AGENT_RULES = [
  { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch', 'patch'] },
  { apiGroups: [''], resources: ['nodes/status'], verbs: ['patch'] },
  { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] },
  { apiGroups: [''], resources: ['pods/eviction'], verbs: ['create'] },
  { apiGroups: [''], resources: ['events'], verbs: ['create'] },
];

/**
 * Runs once per node before the agent, privileged because it formats and mounts a block device
 * on the host. Kept to explicit steps: nothing is formatted that holds a filesystem already
 * (blkid), nothing is mounted twice, and without the device builds stay on the boot disk.
 */
export function prepareWorkloadDiskScript(device: string, mount: string): string {
  return [
    'set -eu',
    `DEVICE=${device}`,
    `MOUNT=/host${mount}`,
    'if mountpoint -q "$MOUNT"; then echo "workload disk already mounted at $MOUNT"; exit 0; fi',
    'if [ ! -b "$DEVICE" ]; then echo "no block device $DEVICE: builds use the boot disk"; exit 0; fi',
    'if ! blkid "$DEVICE" >/dev/null 2>&1; then',
    '  echo "formatting $DEVICE (ext4)"',
    '  mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1,discard "$DEVICE"',
    'fi',
    'mkdir -p "$MOUNT"',
    'mount -o defaults,discard,noatime "$DEVICE" "$MOUNT"',
    'echo "mounted $DEVICE at $MOUNT"',
  ].join('\n');
}

export function kubeManifests(settings: ManifestSettings): Manifest[] {
  const { namespace, pool } = settings;
  // Namespace, account and role serve every pool in the namespace; the DaemonSets are the pool's.
  const shared = { 'app.kubernetes.io/part-of': 'buildfleet' };
  const labels = { ...shared, [POOL_LABEL]: pool };
  const account = 'buildfleet-agent';
  const agentName = `buildfleet-agent-${pool}`;
  const prepullName = `buildfleet-prepull-${pool}`;
  const onPool = { [POOL_LABEL]: pool };
  const hostPath = (name: string, path: string, type: string) => ({ name, hostPath: { path, type } });

  const agent: Manifest = {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: agentName, namespace, labels },
    spec: {
      selector: { matchLabels: { app: agentName } },
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: { labels: { ...labels, app: agentName } },
        spec: {
          serviceAccountName: account,
          nodeSelector: onPool,
          // Restarting a hung runtime is `nsenter --target 1 ... systemctl restart containerd`: the
          // host's PID namespace and a privileged agent, as node-problem-detector's remedies need.
          hostPID: true,
          // The agent must run where nothing else may: on tainted (starting) and cordoned nodes.
          tolerations: [{ operator: 'Exists' }],
          initContainers: [
            {
              name: 'prepare-workload-disk',
              image: settings.agentImage,
              command: ['/bin/sh', '-c', prepareWorkloadDiskScript(settings.workloadDevice, WORKLOAD_MOUNT)],
              securityContext: { privileged: true },
              volumeMounts: [
                { name: 'dev', mountPath: '/dev' },
                { name: 'workload', mountPath: `/host${WORKLOAD_MOUNT}`, mountPropagation: 'Bidirectional' },
              ],
            },
          ],
          containers: [
            {
              name: 'agent',
              image: settings.agentImage,
              args: ['agent', 'run', '--in-cluster'],
              env: [
                { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                { name: 'BUILDFLEET_POOL', value: pool },
                { name: 'BUILDFLEET_BUILD_IMAGE', value: settings.buildImage },
                { name: 'BUILDFLEET_STARTUP_TAINT', value: settings.startupTaintKey },
                { name: 'BUILDFLEET_RUNTIME_SOCKET', value: '/host/run/runtime.sock' },
                { name: 'BUILDFLEET_DISKSTATS', value: '/host/proc/diskstats' },
              ],
              resources: { requests: { cpu: '20m', memory: '64Mi' }, limits: { memory: '256Mi' } },
              securityContext: { privileged: true, readOnlyRootFilesystem: true },
              volumeMounts: [
                { name: 'runtime-socket', mountPath: '/host/run/runtime.sock' },
                { name: 'diskstats', mountPath: '/host/proc/diskstats', readOnly: true },
                { name: 'runtime-disk', mountPath: '/host/runtime-disk', readOnly: true },
                { name: 'workload', mountPath: '/host/workload-disk', readOnly: true, mountPropagation: 'HostToContainer' },
              ],
            },
          ],
          volumes: [
            hostPath('runtime-socket', settings.runtimeSocket, 'Socket'),
            hostPath('diskstats', '/proc/diskstats', 'File'),
            hostPath('runtime-disk', settings.runtimeDataDir, 'Directory'),
            hostPath('workload', WORKLOAD_MOUNT, 'DirectoryOrCreate'),
            hostPath('dev', '/dev', 'Directory'),
          ],
        },
      },
    },
  };

  const prepull: Manifest = {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: prepullName, namespace, labels },
    spec: {
      selector: { matchLabels: { app: prepullName } },
      template: {
        metadata: { labels: { ...labels, app: prepullName } },
        spec: {
          nodeSelector: onPool,
          // Runs while the node still carries the startup taint: it is what the taint waits for.
          tolerations: [{ key: settings.startupTaintKey, operator: 'Exists', effect: 'NoSchedule' }],
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              // A container of the build image that stays up, so image GC never counts the image unused.
              name: 'hold',
              image: settings.buildImage,
              imagePullPolicy: 'IfNotPresent',
              command: ['/bin/sh', '-c', 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'],
              resources: { requests: { cpu: '1m', memory: '4Mi' }, limits: { cpu: '10m', memory: '16Mi' } },
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true },
            },
          ],
        },
      },
    },
  };

  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace, labels: shared } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: account, namespace, labels: shared } },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: `buildfleet-agent-${namespace}`, labels: shared }, rules: AGENT_RULES },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: `buildfleet-agent-${namespace}`, labels: shared },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `buildfleet-agent-${namespace}` },
      subjects: [{ kind: 'ServiceAccount', name: account, namespace }],
    },
    agent,
    prepull,
  ];
}

/** One YAML stream, documents separated by `---`, as kubectl apply -f takes it. */
export function manifestsYaml(objects: object[]): string {
  return objects.map((object) => stringify(object, { lineWidth: 0 })).join('---\n');
}
