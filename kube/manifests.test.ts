import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { runCli } from '../test/helpers/real.js';
import { buildProgram } from '../cli/program.js';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { DEFAULT_STARTUP_TAINT, kubeManifests, manifestsYaml, requireDigestReference, type ManifestSettings } from './manifests.js';

const DIGEST = 'sha256:' + 'b'.repeat(64);
const settings: ManifestSettings = {
  pool: 'ci',
  namespace: 'buildfleet',
  buildImage: `reg.example/ci/build@${DIGEST}`,
  agentImage: 'reg.example/buildfleet/agent:0.1.0',
  startupTaintKey: DEFAULT_STARTUP_TAINT,
  runtimeSocket: '/run/containerd/containerd.sock',
  runtimeDataDir: '/var/lib/containerd',
  workloadDevice: '/dev/disk/by-id/google-local-nvme-ssd-0',
};

/** Each kind through kubernetes-models' schema check (the Kubernetes OpenAPI schemas); throws on the first invalid object. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = { Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, DaemonSet };
function validate(objects: { kind?: string; metadata?: { name?: string } }[]): void {
  for (const object of objects) {
    const Model = MODELS[object.kind ?? ''];
    assert.ok(Model, `a model for ${object.kind}`);
    assert.doesNotThrow(() => new Model(object as never).validate(), `${object.kind}/${object.metadata?.name}`);
  }
}

type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
type PodSpec = { hostPID?: boolean; tolerations: { key?: string; operator: string }[]; initContainers?: { securityContext?: { privileged?: boolean } }[]; containers: { image: string; securityContext?: { privileged?: boolean }; volumeMounts?: { name: string }[] }[]; volumes?: { name: string; hostPath: { path: string } }[]; nodeSelector: Record<string, string> };
const podSpec = (objects: ReturnType<typeof kubeManifests>, name: string) => ((objects.find((o) => o.metadata.name === name)?.spec as { template: { spec: PodSpec } }).template.spec);

test('every generated object validates against the Kubernetes schemas, and an invalid one would not', () => {
  const objects = kubeManifests(settings);
  assert.deepEqual(objects.map((o) => o.kind), ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'DaemonSet']);
  validate(objects);
  const broken = structuredClone(objects[4]!) as unknown as { spec: { template: { spec: { containers: { name?: string }[] } } } };
  delete broken.spec.template.spec.containers[0]!.name;
  assert.throws(() => new DaemonSet(broken as never).validate(), /required property name/);
});

test('RBAC is least privilege: no wildcards, exactly the calls the agent makes', () => {
  const role = kubeManifests(settings).find((o) => o.kind === 'ClusterRole') as unknown as { rules: Rule[] };
  for (const rule of role.rules) for (const word of [...rule.apiGroups, ...rule.resources, ...rule.verbs]) assert.notEqual(word, '*');
  const grants = role.rules.flatMap((rule) => rule.resources.flatMap((resource) => rule.verbs.map((verb) => `${rule.apiGroups.join()}/${resource}:${verb}`))).sort();
  assert.deepEqual(grants, ['/events:create', '/nodes/status:patch', '/nodes:get', '/nodes:list', '/nodes:patch', '/nodes:watch', '/pods/eviction:create', '/pods:get', '/pods:list']);
  const binding = kubeManifests(settings).find((o) => o.kind === 'ClusterRoleBinding') as unknown as { subjects: { name: string; namespace: string }[] };
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'buildfleet-agent', namespace: 'buildfleet' }]);
});

test('the agent gets the socket, diskstats and both disks, the host PID namespace and privilege to restart the runtime; the pre-pull is unprivileged and tolerates the startup taint only', () => {
  const objects = kubeManifests(settings);
  const agent = podSpec(objects, 'buildfleet-agent-ci');
  assert.deepEqual(agent.volumes?.map((v) => v.hostPath.path), ['/run/containerd/containerd.sock', '/proc/diskstats', '/var/lib/containerd', '/mnt/buildfleet/workload', '/dev']);
  assert.equal(agent.initContainers?.[0]?.securityContext?.privileged, true);
  assert.equal(agent.containers[0]?.securityContext?.privileged, true);
  assert.equal(agent.hostPID, true);
  assert.deepEqual(agent.nodeSelector, { 'buildfleet.io/pool': 'ci' });
  const prepull = podSpec(objects, 'buildfleet-prepull-ci');
  assert.equal(prepull.containers[0]?.image, settings.buildImage);
  assert.notEqual(prepull.containers[0]?.securityContext?.privileged, true);
  assert.notEqual(prepull.hostPID, true);
  assert.deepEqual(prepull.tolerations, [{ key: DEFAULT_STARTUP_TAINT, operator: 'Exists', effect: 'NoSchedule' }]);
  // The YAML is the same objects.
  assert.deepEqual(parseAllDocuments(manifestsYaml(objects)).map((d) => d.toJS()), objects);
});

test('the build image must be pinned by digest', () => {
  assert.equal(requireDigestReference(settings.buildImage, 'x'), settings.buildImage);
  assert.throws(() => requireDigestReference('reg.example/ci/build:1', '--build-image'), (e: unknown) => e instanceof BuildfleetError && e.kind === 'usage' && /--build-image: reg.example\/ci\/build:1 is not pinned by digest/.test(e.message));
});

test('buildfleet kube manifests: from a spec to a file; a tag is refused in one line', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kube-manifests-'));
  try {
    await writeFile(join(dir, 'pool.yaml'), `name: gpu\nnodes: 2\nimages: [reg.example/ci/build@${DIGEST}]\n`);
    await writeFile(join(dir, 'tagged.yaml'), 'name: gpu\nnodes: 2\nimages: [reg.example/ci/build:1]\n');
    // The success in this process (it writes a file), the refusal as a user sees it (exit code, stderr).
    const refusal = runCli(['kube', 'manifests', '-f', join(dir, 'tagged.yaml')]);
    await (await buildProgram()).parseAsync(['node', 'buildfleet', '--quiet', 'kube', 'manifests', '-f', join(dir, 'pool.yaml'), '--namespace', 'ci-agents', '--agent-image', 'a/agent:1', '-o', join(dir, 'out.yaml')]);
    const refused = await refusal;
    const objects = parseAllDocuments(await readFile(join(dir, 'out.yaml'), 'utf8')).map((d) => d.toJS());
    validate(objects);
    assert.deepEqual(objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).slice(4), ['DaemonSet/ci-agents/buildfleet-agent-gpu', 'DaemonSet/ci-agents/buildfleet-prepull-gpu']);
    assert.equal(refused.exitCode, 2);
    assert.equal(refused.stdout, '');
    assert.match(refused.stderr, /^buildfleet: error: .*tagged.yaml: images\[0\]: reg.example\/ci\/build:1 is not pinned by digest; give REPOSITORY@sha256:\.\.\. \(a tag can move, and every node must hold the same bytes\)$/);
    assert.equal(refused.stderr.trim().split('\n').length, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
