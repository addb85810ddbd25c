import type { Command } from 'commander';
import { constants } from 'node:os';
import { copyImage } from '../imagebuilder/copy/copy.js';
import { inspectImage } from '../imagebuilder/copy/inspect.js';
import { parsePlatform } from '../imagebuilder/oci/platform.js';
import { openDestination, openSource } from '../imagebuilder/transports/index.js';
import type { GlobalOptions } from './global-options.js';
import { formatBytes, printJson, progressBar, table } from './output.js';
import { positiveInt, transportOptions } from './options.js';
import { registerSquash } from './squash.js';
import { registerBuild } from './image-build.js';

export function registerImageCommands(program: Command, globals: () => GlobalOptions): void {
  const image = program.command('image').description('inspect, copy and squash container images across registries, daemons, archives and OCI layouts');
  registerSquash(image, globals);
  registerBuild(image, globals);
  // Exiting (not dying of the signal) lets the library remove the temp files it owns.
  image.hook('preAction', () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(128 + constants.signals[signal]));
  });

  image
    .command('inspect')
    .argument('<ref>', 'image reference: docker://HOST/REPO:TAG, HOST/REPO[:TAG|@DIGEST], docker-daemon:NAME:TAG, docker-archive:PATH[:NAME:TAG], oci:DIR[:TAG]')
    .description('show an image: manifest digest, platform, layers with sizes and media types, runtime config')
    .action(async (ref: string) => {
      const options = globals();
      const source = await openSource(ref, transportOptions(options));
      try {
        const summary = await inspectImage(source, options.platform ? { platform: parsePlatform(options.platform) } : {});
        if (options.json) return printJson(summary);
        const lines = [
          `Reference:  ${summary.reference}`,
          `Digest:     ${summary.manifestDigest}`,
          `MediaType:  ${summary.manifestMediaType}`,
          `Platform:   ${summary.platform}${summary.indexPlatforms ? `  (index: ${summary.indexPlatforms.join(', ')})` : ''}`,
          ...(summary.created ? [`Created:    ${summary.created}`] : []),
          `Size:       ${formatBytes(summary.totalSize)} in ${summary.layers.length} layers`,
        ];
        for (const [key, value] of Object.entries(summary.config)) lines.push(`${(key + ':').padEnd(11)} ${typeof value === 'string' ? value : JSON.stringify(value)}`);
        lines.push('', table([['#', 'DIGEST', 'SIZE', 'COMPRESSION'], ...summary.layers.map((layer, i) => [String(i + 1), layer.digest.slice(0, 19), formatBytes(layer.size), layer.compression])]));
        process.stdout.write(lines.join('\n') + '\n');
      } finally {
        await source.close();
      }
    });

  image
    .command('copy')
    .argument('<src>', 'source image reference')
    .argument('<dst>', 'destination image reference')
    .description('copy an image between any two transports; blobs the destination has are not uploaded again, nothing is published until every blob is there')
    .option('--concurrency <n>', 'blobs in flight at once', (value) => positiveInt(value, '--concurrency'), 4)
    .action(async (src: string, dst: string, commandOptions: { concurrency: number }) => {
      const options = globals();
      const transports = transportOptions(options);
      const source = await openSource(src, transports);
      try {
        const destination = await openDestination(dst, transports);
        const bar = progressBar('copying', options);
        let result;
        try {
          result = await copyImage(source, destination, {
            concurrency: commandOptions.concurrency,
            onProgress: bar.listener,
            ...(options.platform && { platform: parsePlatform(options.platform) }),
          });
        } finally {
          bar.finish();
        }
        if (options.json) return printJson(result);
        const copied = result.layers.filter((layer) => layer.action !== 'present').length;
        if (!options.quiet) {
          process.stdout.write(
            `copied ${result.source} -> ${result.destination}\n` +
              `  manifest ${result.manifestDigest}\n` +
              `  layers: ${copied} transferred, ${result.layers.length - copied} already present; ${formatBytes(result.bytesRead)} read in ${(result.durationMs / 1000).toFixed(1)} s\n`,
          );
        }
      } finally {
        await source.close();
      }
    });
}
