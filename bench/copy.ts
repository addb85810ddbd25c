import { execa } from 'execa';
import { RegistryServer } from '../nodepool/daemons/index.js';
import { openDestination } from '../imagebuilder/transports/index.js';
import { generateImage } from './image-generator.js';
import { markdownTable, median, seconds } from './stats.js';
import { userCliCommand, exitOnHelp, numberArg } from './harness.js';

/**
 * Registry -> registry copy: `buildfleet image copy` against `skopeo copy` (Debian's skopeo),
 * the same generated image, the same two loopback registries, alternating runs, each run into a
 * fresh repository so nothing is skipped.
 */
export type CopyBenchOptions = { layers: number; totalBytes: number; runs: number; concurrency?: number; log?: (line: string) => void };

export type CopyBenchResult = {
  image: { layers: number; compressedBytes: number };
  runs: { buildfleet: number[]; skopeo: number[] };
  medianMs: { buildfleet: number; skopeo: number };
  ratio: number;
  table: string;
};

export async function benchCopy(options: CopyBenchOptions): Promise<CopyBenchResult> {
  const log = options.log ?? (() => {});
  const from = await RegistryServer.start();
  try {
    log(`generating ${options.layers} layers, ${(options.totalBytes / 1e9).toFixed(2)} GB into ${from.host}`);
    const generated = await generateImage(await openDestination(`${from.host}/bench/image:v1`), { layers: options.layers, totalBytes: options.totalBytes, concurrency: 2 });
    const compressedBytes = generated.layers.reduce((sum, layer) => sum + layer.size, 0);
    const runs = { buildfleet: [] as number[], skopeo: [] as number[] };
    const source = `${from.host}/bench/image:v1`;
    for (let run = 0; run < options.runs; run++) {
      const tools = run % 2 === 0 ? (['buildfleet', 'skopeo'] as const) : (['skopeo', 'buildfleet'] as const);
      for (const tool of tools) {
        // A fresh, empty destination registry per run: skopeo's blob-info cache would otherwise
        // mount blobs from an earlier run's repository and upload nothing.
        const to = await RegistryServer.start();
        const target = `${to.host}/bench/${tool}:v1`;
        let elapsed: number;
        try {
          const started = performance.now();
          if (tool === 'buildfleet') {
            await execa(process.execPath, [...userCliCommand(), '--quiet', 'image', 'copy', '--concurrency', String(options.concurrency ?? 6), source, target]);
          } else {
            await execa('skopeo', ['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${source}`, `docker://${target}`]);
          }
          elapsed = performance.now() - started;
        } finally {
          await to.stop();
        }
        runs[tool].push(elapsed);
        log(`run ${run + 1}/${options.runs} ${tool}: ${seconds(elapsed)} s`);
      }
    }
    const medianMs = { buildfleet: median(runs.buildfleet), skopeo: median(runs.skopeo) };
    const ratio = medianMs.skopeo / medianMs.buildfleet;
    const mbps = (ms: number) => ((compressedBytes / 1e6) / (ms / 1000)).toFixed(0);
    const table = markdownTable(
      ['tool', 'median s', 'runs (s)', 'MB/s', 'vs skopeo'],
      [
        ['buildfleet image copy', seconds(medianMs.buildfleet), runs.buildfleet.map(seconds).join(', '), mbps(medianMs.buildfleet), `${ratio.toFixed(2)}x faster`],
        ['skopeo copy (peer)', seconds(medianMs.skopeo), runs.skopeo.map(seconds).join(', '), mbps(medianMs.skopeo), '1.00x'],
      ],
    );
    return { image: { layers: options.layers, compressedBytes }, runs, medianMs, ratio, table };
  } finally {
    await from.stop();
  }
}

const usage = `node dist/bench/copy.js [--layers 30] [--mb 1000] [--runs 3] [--concurrency 6]
  --layers, --mb   shape of the generated image copied registry -> registry by buildfleet and by skopeo
  --runs           runs of each tool, alternating
  --concurrency    buildfleet's blob concurrency`;

if (import.meta.url === `file://${process.argv[1]}`) {
  exitOnHelp(usage);
  const result = await benchCopy({
    layers: numberArg('layers', 30),
    totalBytes: numberArg('mb', 1000) * 1e6,
    runs: numberArg('runs', 3),
    concurrency: numberArg('concurrency', 6),
    log: (line) => process.stderr.write(line + '\n'),
  });
  process.stdout.write(`registry -> registry copy, ${result.image.layers} layers, ${(result.image.compressedBytes / 1e9).toFixed(2)} GB compressed, loopback\n\n${result.table}\n`);
}
