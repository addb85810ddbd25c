import type { Command } from 'commander';
import type { ImageBuildProgress, ImageBuildReport } from '../imagebuilder/pipeline/build-and-push.js';
import { parseBuildArgs, parseLabels } from '../imagebuilder/build/options.js';
import { squashOptionsFrom } from '../imagebuilder/squash/index.js';
import { parsePlatform } from '../imagebuilder/oci/platform.js';
import { BuildfleetError, formatBytes, printJson } from './output.js';
import { positiveInt, transportOptions } from './options.js';
import type { GlobalOptions } from './global-options.js';

type BuildFlags = {
  tag: string;
  file?: string;
  buildArg: string[];
  label: string[];
  target?: string;
  network?: string;
  cache: boolean;
  pull: boolean;
  squash: boolean;
  layers?: number;
  fromLayer?: number;
  push: boolean;
  report?: string;
  dockerHost?: string;
};

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function registerBuild(image: Command, globals: () => GlobalOptions): void {
  image
    .command('build')
    .argument('<context>', 'build context directory (.dockerignore honoured, as docker build does)')
    .description(
      'build an image on a Docker Engine, then (--squash) squash it and (--push) push it to a registry, reading it from the engine once; ' +
        'the build log goes to stderr (-q or --json: none; --report FILE keeps it and writes the JSON); exit 10 when a build step fails, 2 bad input or no Dockerfile, 4 registry credentials refused, 5 registry unreachable (checked before the build)',
    )
    .requiredOption('-t, --tag <dst>', 'HOST/REPO:TAG to tag (and with --push, push); docker-daemon:NAME:TAG keeps it in the engine')
    .option('-f, --file <path>', 'Dockerfile, relative to the current directory (default: CONTEXT/Dockerfile)')
    .option('--build-arg <name=value>', 'build argument; NAME alone takes it from the environment; repeatable', collect, [])
    .option('--label <key=value>', 'label on the image; repeatable', collect, [])
    .option('--target <stage>', 'build up to this stage of a multi-stage Dockerfile')
    .option('--network <mode>', 'network of RUN steps (none, host, a network name); default: the engine\'s')
    .option('--no-cache', 'do not use the engine\'s build cache')
    .option('--pull', 'look for a newer base image', false)
    .option('--squash', 'squash the built image (all its layers into one, or --layers K)', false)
    .option('--layers <k>', 'with --squash: output layers (1 = classic squash; 4-8 let a runtime overlap download and extraction)', (v) => positiveInt(v, '--layers'))
    .option('--from-layer <n>', 'with --squash: squash only layers N..top, keep the ones below (e.g. the base image\'s)', (v) => positiveInt(v, '--from-layer'))
    .option('--push', 'push the result to the --tag registry (blobs first, the manifest last: a failure leaves no tag)', false)
    .option('--report <file>', 'write a JSON report (digests, sizes, layers before/after, phase times) to FILE, atomically')
    .option('--docker-host <url>', 'the Docker Engine: unix:///PATH or tcp://HOST:PORT (default: $DOCKER_HOST, else /var/run/docker.sock)')
    .action(async (context: string, flags: BuildFlags) => {
      const options = globals();
      if (!flags.squash && (flags.layers !== undefined || flags.fromLayer !== undefined)) {
        throw new BuildfleetError('usage', '--layers and --from-layer need --squash');
      }
      const squash = flags.squash ? squashOptionsFrom({ layers: flags.layers ?? 1, fromLayer: flags.fromLayer ?? 1, compression: 'gzip' }, process.env) : undefined;
      // Loaded here: dockerode and the pipeline cost every other command start-up time.
      const { dockerFromEnvironment } = await import('../imagebuilder/transports/docker-daemon.js');
      const { buildImage, writeBuildReport } = await import('../imagebuilder/pipeline/build-and-push.js');
      const docker = dockerFromEnvironment(flags.dockerHost !== undefined ? { ...process.env, DOCKER_HOST: flags.dockerHost } : process.env);
      // --json keeps stderr for the one JSON error object, as every command does; --report keeps the log.
      const logs = !options.quiet && !options.json;
      const say = (line: string) => {
        if (logs) process.stderr.write(line + '\n');
      };
      const report = await buildImage({
        context,
        tag: flags.tag,
        ...(flags.file !== undefined && { file: flags.file }),
        buildArgs: parseBuildArgs(flags.buildArg, process.env),
        labels: parseLabels(flags.label),
        ...(flags.target !== undefined && { target: flags.target }),
        ...(flags.network !== undefined && { network: flags.network }),
        noCache: !flags.cache,
        pull: flags.pull,
        ...(squash && { squash }),
        push: flags.push,
        docker,
        transports: transportOptions(options),
        ...(options.platform && { platform: parsePlatform(options.platform) }),
        ...(logs && { log: (text: string) => process.stderr.write(text) }),
        onProgress: phaseLines(say, flags),
      });
      if (flags.report !== undefined) await writeBuildReport(flags.report, report);
      if (options.json) return printJson(report);
      if (!options.quiet) process.stdout.write(formatBuildReport(report) + '\n');
    });
}

/** One line on stderr as each phase starts (no carriage returns: CI logs). */
function phaseLines(say: (line: string) => void, flags: BuildFlags): (event: ImageBuildProgress) => void {
  let last = '';
  const names: Record<string, string> = {
    check: `checking registry access for ${flags.tag}`,
    build: 'building',
    export: 'reading the built image from the engine',
    index: 'squash: reading layers',
    write: `squash: writing${flags.push ? ' and pushing' : ''}`,
    push: flags.push ? 'pushing (manifest last)' : 'storing in the engine',
    copy: 'pushing (manifest last)',
  };
  return (event) => {
    if (event.phase === last) return;
    last = event.phase;
    say(`buildfleet: ${names[event.phase] ?? event.phase}`);
  };
}

export function formatBuildReport(report: ImageBuildReport): string {
  const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const { source, result, phasesMs } = report;
  const lines = [`built ${source.engineTag} (${source.imageId.slice(0, 19)}): ${source.steps} steps, ${source.layers} layers${source.bytes !== undefined ? `, ${formatBytes(source.bytes)}` : ''}`];
  if (result) {
    lines.push(
      `${result.squashed ? (result.pushed ? 'squashed and pushed' : 'squashed') : 'pushed'} -> ${result.reference}`,
      `  manifest ${result.manifestDigest}`,
      `  layers ${source.layers} -> ${result.layers}; ${formatBytes(result.compressedBytes)}${result.pushed ? ' compressed' : ''}${report.squash ? `; shadowed content removed: ${formatBytes(report.squash.shadowedBytes)}` : ''}`,
    );
  }
  lines.push(`  time: build ${seconds(phasesMs.build)}, export ${seconds(phasesMs.export)}, squash ${seconds(phasesMs.squash)}, push ${seconds(phasesMs.push)}; total ${seconds(phasesMs.total)}`);
  return lines.join('\n');
}
