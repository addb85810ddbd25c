import type { Command } from 'commander';
import type { GlobalOptions } from './global-options.js';
import { printJson } from './output.js';
import { nonNegativeInt, positiveInt } from './options.js';

export function registerBenchCommands(program: Command, globals: () => GlobalOptions): void {
  const bench = program.command('bench').description('benchmarks that put buildfleet beside its peers and the physical floor (need root)');
  bench
    .command('time-to-ready')
    .description(
      'cold local nodes pre-pull an image and start their first container, per image variant (layered, squashed to K layers), ' +
        'split into provision, runtime up, download, decompress + extract and first run, beside the stream floor ' +
        '(curl | pigz -d | tar -x of the squashed layer) and the extract floor (tar -x from memory); a Markdown table, or the report with --json',
    )
    .option('--image <ref>', 'measure this image (any transport) instead of a generated one')
    .option('--preset <name>', 'generated image: small (10 layers, for tests) or large (about 70 layers, 2.5 GB, 150k files)', 'small')
    .option('--variants <list>', 'comma-separated: layered or kN (squashed to N layers), each optionally -direct (buildfleet writes the image into the runtime\'s store) or -preloaded (nodes cloned from a baked runtime disk); default layered,k1,k4,k8,layered-direct,k4-direct,k8-direct,k1-preloaded')
    .option('--runs <n>', 'runs per variant and floor (median, min and max)', (v) => positiveInt(v, '--runs'), 3)
    .option('--concurrent <n>', 'cold nodes started at once against the one registry', (v) => positiveInt(v, '--concurrent'), 1)
    .option('--upstream-mbps <n>', 'cap the link from the registry to the nodes (and floors) at N megabits per second, shared, as a remote registry behind one uplink; the report shows the bytes each run took from upstream either way', (v) => positiveInt(v, '--upstream-mbps'))
    .option('--out <dir>', 'also write report.md, report.json, time-to-ready.svg and .png there')
    .option('--settle-seconds <n>', 'before each run, flush the host and wait up to N seconds for it to be quiet (at most 10% of its cores busy for a second); 0 only flushes', (v) => nonNegativeInt(v, '--settle-seconds'), 60)
    .action(async (flags: { image?: string; preset: string; variants?: string; runs: number; concurrent: number; upstreamMbps?: number; out?: string; settleSeconds: number }) => {
      const options = globals();
      const [{ benchTimeToReady, parseVariant }, { markdown }, { BUILD_IMAGE_PRESETS }] = await Promise.all([
        import('../bench/time-to-ready/run.js'),
        import('../bench/time-to-ready/report.js'),
        import('../bench/build-image.js'),
      ]);
      if (!(flags.preset in BUILD_IMAGE_PRESETS)) {
        const { BuildfleetError } = await import('../imagebuilder/errors.js');
        throw new BuildfleetError('usage', `--preset: ${JSON.stringify(flags.preset)} is not a preset: give ${Object.keys(BUILD_IMAGE_PRESETS).join(' or ')}`);
      }
      const log = options.quiet || options.json ? undefined : (line: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
      const report = await benchTimeToReady({
        ...(flags.image && { image: flags.image }),
        preset: flags.preset as keyof typeof BUILD_IMAGE_PRESETS,
        ...(flags.variants && { variants: flags.variants.split(',').map((v) => parseVariant(v.trim())) }),
        runs: flags.runs,
        concurrent: flags.concurrent,
        ...(flags.upstreamMbps && { upstreamMbps: flags.upstreamMbps }),
        ...(flags.out && { out: flags.out }),
        settleSeconds: flags.settleSeconds,
        ...(log && { log }),
      });
      if (options.json) printJson(report);
      else process.stdout.write(markdown(report));
    });
  bench
    .command('disk-isolation')
    .description(
      'I/O-heavy build jobs (dd conv=fsync writers in /workspace) on a single-disk node and on a dual-disk node (runtime + workload disk), ' +
        'each disk with its own I/O budget: docker ps and docker run --rm IMAGE true latency p50/p90/p99/max, idle and under the load, ' +
        'and the saturation conditions the agent raised per disk; a Markdown table, or the report with --json',
    )
    .option('--preset <name>', 'small (one short run, 2 writers, for tests) or default (3 runs, 4 writers, 30 s each)', 'default')
    .option('--runs <n>', "runs per layout (default: the preset's)", (v) => positiveInt(v, '--runs'))
    .option('--out <dir>', 'also write report.md, report.json, disk-isolation.svg and .png there')
    .action(async (flags: { preset: string; runs?: number; out?: string }) => {
      const options = globals();
      const [{ benchDiskIsolation, DISK_ISOLATION_PRESETS }, { markdown }] = await Promise.all([import('../bench/disk-isolation/run.js'), import('../bench/disk-isolation/report.js')]);
      if (!(flags.preset in DISK_ISOLATION_PRESETS)) {
        const { BuildfleetError } = await import('../imagebuilder/errors.js');
        throw new BuildfleetError('usage', `--preset: ${JSON.stringify(flags.preset)} is not a preset: give ${Object.keys(DISK_ISOLATION_PRESETS).join(' or ')}`);
      }
      // Progress goes to stderr also with --json (stdout holds only the report).
      const log = options.quiet ? undefined : (line: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
      const report = await benchDiskIsolation({
        preset: flags.preset as keyof typeof DISK_ISOLATION_PRESETS,
        ...(flags.runs && { runs: flags.runs }),
        ...(flags.out && { out: flags.out }),
        ...(log && { log }),
      });
      if (options.json) printJson(report);
      else process.stdout.write(markdown(report));
    });
  bench
    .command('cache')
    .description(
      'the toolchain cache with a real toolchain (this machine\'s Node.js, copied in by an installer command): install + pack + push, ' +
        'local hit (in-process, and through the CLI beside a bare node start), remote hit beside the floor (curl | gunzip | tar -x of the same blob); ' +
        'a Markdown table, or the result with --json',
    )
    .option('--runs <n>', 'runs of each measurement (medians)', (v) => positiveInt(v, '--runs'), 3)
    .action(async (flags: { runs: number }) => {
      const options = globals();
      const { benchCache } = await import('../bench/cache.js');
      const log = options.quiet || options.json ? undefined : (line: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
      const result = await benchCache({ runs: flags.runs, ...(log && { log }) });
      if (options.json) printJson(result);
      else process.stdout.write(`${result.table}\n`);
    });
}
