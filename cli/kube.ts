import { Readable } from 'node:stream';
import type { Command } from 'commander';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { GlobalOptions } from './global-options.js';
import { printJson } from './output.js';

type ManifestFlags = {
  file?: string;
  pool?: string;
  buildImage?: string;
  namespace: string;
  agentImage?: string;
  startupTaint?: string;
  runtimeSocket: string;
  runtimeDir: string;
  workloadDevice?: string;
  output?: string;
};

const KUBE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function registerKubeCommands(program: Command, globals: () => GlobalOptions): void {
  const kube = program.command('kube').description('the Kubernetes side of a pool: manifests for kubectl apply (agent, pre-pull, RBAC)');
  kube
    .command('manifests')
    .description(
      'print YAML for `kubectl apply -f -`: a namespace, the agent\'s ServiceAccount with least-privilege RBAC, the agent DaemonSet ' +
        '(runtime socket, /proc/diskstats, both disks; formats and mounts the workload disk when it is a blank raw block device) and the ' +
        'pre-pull DaemonSet that tolerates the startup taint and keeps a container of the build image (by digest) on every node of the pool',
    )
    .option('-f, --file <path>', 'pool spec: its name, its first image (the build image) and, for gke pools, its startup taint')
    .option('--pool <name>', 'pool name, without a spec (nodes labelled buildfleet.io/pool=NAME)')
    .option('--build-image <ref@sha256:...>', 'the build image by digest (default: the spec\'s first image, which must then be a digest reference)')
    .option('--namespace <name>', 'namespace for the agent and the pre-pull', 'buildfleet')
    .option('--agent-image <ref>', 'the agent\'s image (default: buildfleet/agent:VERSION)')
    .option('--startup-taint <key>', 'the startup taint new nodes carry (default: the spec\'s gke.startupTaint.key, else startup-taint.cluster-autoscaler.kubernetes.io/buildfleet-prepull)')
    .option('--runtime-socket <path>', 'containerd\'s socket on the nodes', '/run/containerd/containerd.sock')
    .option('--runtime-dir <path>', 'the runtime\'s data dir on the nodes (its disk is watched)', '/var/lib/containerd')
    .option('--workload-device <path>', 'the workload disk\'s raw block device (default: the first local NVMe SSD, /dev/disk/by-id/google-local-nvme-ssd-0)')
    .option('-o, --output <file>', 'write the YAML to this file (whole or not at all) instead of stdout')
    .action(async (flags: ManifestFlags) => {
      const options = globals();
      const { kubeManifests, manifestsYaml, requireDigestReference, DEFAULT_STARTUP_TAINT, DEFAULT_WORKLOAD_DEVICE } = await import('../kube/manifests.js');
      let pool = flags.pool;
      let buildImage = flags.buildImage;
      let specTaint: string | undefined;
      if (flags.file) {
        const { loadPoolSpec } = await import('../nodepool/pool-spec/pool-spec.js');
        const spec = await loadPoolSpec(flags.file);
        pool ??= spec.name;
        buildImage ??= spec.images[0];
        // gke pools name their startup taint (the gke block, when this build has it).
        specTaint = (spec as { gke?: { startupTaint?: { key?: string } } }).gke?.startupTaint?.key;
      }
      if (!pool) throw new BuildfleetError('usage', 'give a pool spec (-f pool.yaml) or --pool NAME');
      const { checkPoolName } = await import('../nodepool/pool-spec/pool-name.js');
      checkPoolName(pool); // it names the DaemonSets and their node selector
      if (!buildImage) throw new BuildfleetError('usage', 'give the build image by digest: --build-image REPOSITORY@sha256:... (or a spec whose first image is one)');
      if (!KUBE_NAME.test(flags.namespace)) throw new BuildfleetError('usage', `--namespace ${JSON.stringify(flags.namespace)} is not a namespace name (lowercase letters, digits and "-", at most 63)`);
      const objects = kubeManifests({
        pool,
        namespace: flags.namespace,
        buildImage: requireDigestReference(buildImage, flags.buildImage ? '--build-image' : `${flags.file}: images[0]`),
        agentImage: flags.agentImage ?? `buildfleet/agent:${program.version()}`,
        startupTaintKey: flags.startupTaint ?? specTaint ?? DEFAULT_STARTUP_TAINT,
        runtimeSocket: flags.runtimeSocket,
        runtimeDataDir: flags.runtimeDir,
        workloadDevice: flags.workloadDevice ?? DEFAULT_WORKLOAD_DEVICE,
      });
      const text = manifestsYaml(objects);
      if (flags.output) {
        const { writeFileAtomically } = await import('../imagebuilder/transports/files.js');
        await writeFileAtomically(Readable.from([text]), flags.output);
        if (options.json) printJson({ file: flags.output, objects: objects.map((o) => `${o.kind}/${o.metadata.name}`) });
        else if (!options.quiet) process.stderr.write(`wrote ${objects.length} objects to ${flags.output}\n`);
      } else if (options.json) printJson(objects);
      else process.stdout.write(text);
    });
}
