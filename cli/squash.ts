import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { squashImage, squashOptionsFrom, type SquashProgress, type SquashReport, type SquashSettings } from '../imagebuilder/squash/index.js';
import { parseCompression } from '../imagebuilder/compress/levels.js';
import { parsePlatform } from '../imagebuilder/oci/platform.js';
import { openDestination, openSource } from '../imagebuilder/transports/index.js';
import { nonNegativeInt, positiveInt, transportOptions } from './options.js';
import type { GlobalOptions } from './global-options.js';
import { formatBytes, printJson, showsProgress, table, type OutputOptions } from './output.js';

export function registerSquash(image: Command, globals: () => GlobalOptions): void {
  image
    .command('squash')
    .argument('<src>', 'image to squash (any transport)')
    .argument('<dst>', 'where to write the squashed image (any transport)')
    .description('merge all layers into one (or K size-balanced layers with disjoint paths), dropping everything later layers deleted or replaced; runtime config and history kept')
    .option('--layers <k>', 'output layers: 1 is the classic squash; 4-8 let a runtime overlap download and extraction', (v) => positiveInt(v, '--layers'), 1)
    .option('--from-layer <n>', 'squash only layers N..top (1-based, as `image inspect` numbers them); the layers below stay as they are', (v) => positiveInt(v, '--from-layer'), 1)
    .option('--compression <gzip|zstd|none>', 'layer compression (gzip uses every core)', parseCompression, 'gzip')
    .option('--level <n>', 'compression level (gzip 1-9, zstd 1-19)', (v) => positiveInt(v, '--level'))
    .option('--source-date-epoch <seconds>', 'clamp file times and the image creation time to this, for reproducible output (default: $SOURCE_DATE_EPOCH)', (v) => nonNegativeInt(v, '--source-date-epoch'))
    .action(async (src: string, dst: string, flags: SquashSettings) => {
      const options = globals();
      const squashOptions = squashOptionsFrom(flags, process.env);
      const transports = transportOptions(options);
      const source = await openSource(src, transports);
      try {
        const destination = await openDestination(dst, transports);
        const bar = squashProgress(options);
        let report: SquashReport;
        try {
          report = await squashImage(source, destination, {
            ...squashOptions,
            ...(options.platform && { platform: parsePlatform(options.platform) }),
            onProgress: bar.update,
          });
        } finally {
          bar.stop();
        }
        if (options.json) return printJson(report);
        if (!options.quiet) process.stdout.write(formatReport(report) + '\n');
      } finally {
        await source.close();
      }
    });
}

export function formatReport(report: SquashReport): string {
  const { bytes, layers, phasesMs } = report;
  const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  return [
    `squashed ${report.source} -> ${report.destination}`,
    `  manifest ${report.manifestDigest}`,
    '',
    table([
      ['', 'BEFORE', 'AFTER'],
      ['layers', String(layers.before), String(layers.after)],
      ['compressed', formatBytes(bytes.compressedBefore), formatBytes(bytes.compressedAfter)],
      ['uncompressed', formatBytes(bytes.uncompressedBefore), formatBytes(bytes.uncompressedAfter)],
      ['entries / files', String(report.entriesBefore), String(report.files)],
    ]),
    '',
    `  shadowed content removed: ${formatBytes(report.shadowedBytes)}`,
    `  compression: ${report.compression.format}${report.compression.engine ? ` (${report.compression.engine})` : ''}${report.compression.level !== undefined ? `, level ${report.compression.level}` : ''}`,
    `  time: index ${seconds(phasesMs.index)}, merge ${seconds(phasesMs.merge)}, write ${seconds(phasesMs.write)}, push ${seconds(phasesMs.push)}; total ${seconds(phasesMs.total)}`,
  ].join('\n');
}

function squashProgress(options: OutputOptions): { update: (event: SquashProgress) => void; stop: () => void } {
  if (!showsProgress(options)) return { update: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar({ stream: process.stderr, format: '{phase} [{bar}] {percentage}% {detail}', hideCursor: true, clearOnComplete: true, barsize: 30 }, cliProgress.Presets.shades_classic);
  bar.start(1, 0, { phase: 'index', detail: '' });
  return {
    update: (event) => {
      if (event.phase === 'index') {
        bar.setTotal(event.layers);
        bar.update(event.layersDone, { phase: 'reading layers', detail: `${event.layersDone}/${event.layers}` });
      } else if (event.phase === 'write') {
        bar.setTotal(Math.max(1, event.totalBytes));
        bar.update(event.bytes, { phase: 'writing      ', detail: `${formatBytes(event.bytes)} / ${formatBytes(event.totalBytes)}` });
      } else {
        bar.setTotal(event.blobs);
        bar.update(event.blobsDone, { phase: 'pushing      ', detail: `${event.blobsDone}/${event.blobs} blobs` });
      }
    },
    stop: () => bar.stop(),
  };
}
