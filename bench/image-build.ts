import { join } from 'node:path';
import { execa } from 'execa';
import { packageRoot } from '../imagebuilder/package-root.js';
import { DockerEngine, RegistryServer, importBusyboxBase } from '../nodepool/daemons/index.js';
import { userCliCommand, exitOnHelp, numberArg, tempDir } from './harness.js';
import { markdownTable, median } from './stats.js';

/**
 * `buildfleet image build --squash --push` of ci/build-image against its parts run apart: the
 * build alone (`image build`, nothing after it) and `image squash docker-daemon:IMG REGISTRY/…`
 * of the image that build made. The goal: build + squash + push costs no more than the build
 * alone plus 1.2x the squash alone. Every build runs with --no-cache (the same work each time).
 * Times are wall seconds of each command as a user runs it (node start-up included). Builds vary
 * most from run to run, so the table also gives what the whole command costs beyond its own
 * build phase (from its report) against the squash alone.
 */
const usage = `node dist/bench/image-build.js [--files N] [--kb N] [--runs N]
  --files  small files per runtime in ci/build-image (its FILES build arg; default 2000)
  --kb     binary KB per runtime (its KB build arg; default 8192)
  --runs   rounds (default 1); the table shows medians, the ratio taken per round
Root: starts a Docker Engine and a registry of its own under a temp dir.`;

/** One round: the build alone, the squash alone, and the whole command with its own build phase (from its report). */
export type ImageBuildBenchRow = { buildS: number; squashS: number; allS: number; allBuildS: number };

async function wall(args: string[], env: Record<string, string>): Promise<{ seconds: number; stdout: string }> {
  const started = performance.now();
  const result = await execa(process.execPath, [...userCliCommand(), ...args], { env, reject: false });
  if (result.exitCode !== 0) throw new Error(`buildfleet ${args.join(' ')} failed (exit ${result.exitCode}): ${result.stderr.slice(-800)}`);
  return { seconds: (performance.now() - started) / 1000, stdout: result.stdout };
}

export async function benchImageBuild(options: { files: number; kb: number; runs: number }, log: (line: string) => void = () => {}): Promise<{ rows: ImageBuildBenchRow[]; table: string }> {
  const work = await tempDir('buildfleet-bench-image-build-');
  let engine: DockerEngine | undefined;
  let registry: RegistryServer | undefined;
  try {
    [engine, registry] = await Promise.all([DockerEngine.start({ root: join(work.path, 'engine') }), RegistryServer.start({ root: join(work.path, 'registry') })]);
    await importBusyboxBase(engine.docker);
    const env = { DOCKER_HOST: engine.host };
    const context = join(packageRoot, 'ci', 'build-image');
    const buildArgs = ['--build-arg', `FILES=${options.files}`, '--build-arg', `KB=${options.kb}`, '--network', 'none', '--no-cache'];
    const rows: ImageBuildBenchRow[] = [];
    let layers = '';
    for (let round = 1; round <= options.runs; round++) {
      log(`round ${round}/${options.runs}: image build (alone)`);
      const alone = `${registry.host}/bench/build:alone-${round}`;
      const build = await wall(['--quiet', 'image', 'build', context, '--tag', alone, ...buildArgs], env);
      log(`round ${round}/${options.runs}: image squash docker-daemon:${alone} -> registry`);
      const squash = await wall(['--quiet', 'image', 'squash', `docker-daemon:${alone}`, `${registry.host}/bench/build:squashed-${round}`], env);
      log(`round ${round}/${options.runs}: image build --squash --push`);
      const all = await wall(['--quiet', '--json', 'image', 'build', context, '--tag', `${registry.host}/bench/build:all-${round}`, ...buildArgs, '--squash', '--push'], env);
      const report = JSON.parse(all.stdout) as { source: { layers: number; bytes: number }; result: { layers: number; compressedBytes: number }; phasesMs: Record<string, number> };
      layers = `${report.source.layers} layers, ${(report.source.bytes / 1e6).toFixed(0)} MB -> ${report.result.layers} layer, ${(report.result.compressedBytes / 1e6).toFixed(0)} MB gzip; phases of the last (ms): ${JSON.stringify(report.phasesMs)}`;
      rows.push({ buildS: build.seconds, squashS: squash.seconds, allS: all.seconds, allBuildS: report.phasesMs.build! / 1000 });
    }
    const m = (pick: (row: ImageBuildBenchRow) => number) => median(rows.map(pick));
    const budget = (row: ImageBuildBenchRow) => row.buildS + 1.2 * row.squashS;
    // Builds vary most from run to run (a RUN step per container): so the figure that matters is
    // also given apart, what the command costs beyond its own build against the squash alone.
    const table = markdownTable(
      ['what', 'wall s (median)', 'ratio'],
      [
        ['image build (alone)', m((r) => r.buildS).toFixed(2), ''],
        ['image squash docker-daemon: -> registry (alone; its own docker save)', m((r) => r.squashS).toFixed(2), '1.00 (the peer)'],
        ['image build --squash --push', m((r) => r.allS).toFixed(2), ''],
        ['  its build phase', m((r) => r.allBuildS).toFixed(2), ''],
        ['  **the rest: start-up, export, squash, push**', m((r) => r.allS - r.allBuildS).toFixed(2), `**${m((r) => (r.allS - r.allBuildS) / r.squashS).toFixed(2)}x the squash alone** (goal <= 1.2)`],
        ['image build --squash --push vs build alone + 1.2x squash alone', '', `${m((r) => r.allS / budget(r)).toFixed(2)} (goal <= 1.00)`],
      ],
    );
    return { rows, table: `ci/build-image with FILES=${options.files} KB=${options.kb}: ${layers}\n\n${table}` };
  } finally {
    await Promise.allSettled([engine?.stop(), registry?.stop()]);
    await work.remove();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  exitOnHelp(usage);
  const result = await benchImageBuild({ files: numberArg('files', 2000), kb: numberArg('kb', 8192), runs: numberArg('runs', 1) }, (line) => process.stderr.write(line + '\n'));
  process.stdout.write(result.table + '\n');
}
