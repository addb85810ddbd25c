import type { Command } from 'commander';
import { constants } from 'node:os';
import type { GlobalOptions } from './global-options.js';
import { formatBytes, printJson, table } from './output.js';
import { transportOptions } from './options.js';

const DEFAULT_DIR = process.env.BUILDFLEET_CACHE_DIR ?? process.env.RUNNER_TOOL_CACHE ?? '/var/cache/buildfleet/toolcache';

type CommonFlags = { dir: string; registry?: string; libc?: string };

/**
 * `cache get|put|ls|gc`. The library is loaded inside each action, after parsing: a local hit
 * should pay for the start-up of what it uses only.
 */
export function registerCacheCommands(program: Command, globals: () => GlobalOptions): void {
  const cache = program
    .command('cache')
    .description('the node\'s toolchain cache: language versions installed once, kept on the workload disk (DIR/TOOL/VERSION/ARCH + ARCH.complete, the hosted runners\' tool-cache layout), shared through a registry');
  // Exiting (not dying of the signal) runs the cleanup of work directories and the installer's process group.
  cache.hook('preAction', () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(128 + constants.signals[signal]));
  });
  const withDir = (command: Command) =>
    command.option('--dir <dir>', 'the cache directory, on the workload disk ($BUILDFLEET_CACHE_DIR or $RUNNER_TOOL_CACHE set the default)', DEFAULT_DIR);
  const common = (command: Command) =>
    withDir(command)
      .option('--registry <host/repo>', 'registry repository entries are shared through ($BUILDFLEET_CACHE_REGISTRY sets the default; none: local only)', process.env.BUILDFLEET_CACHE_REGISTRY)
      .option('--libc <glibc|musl>', "the toolchain's C library (default: this machine's)");

  const open = async (flags: CommonFlags & { installer?: string; compression?: string }) => {
    const options = globals();
    const { ToolchainCache } = await import('../cache/cache.js');
    const log = options.quiet || options.json ? undefined : (line: string) => process.stderr.write(`buildfleet cache: ${line}\n`);
    const { BuildfleetError } = await import('../imagebuilder/errors.js');
    if (flags.compression !== undefined && flags.compression !== 'gzip' && flags.compression !== 'zstd') throw new BuildfleetError('usage', `--compression must be gzip or zstd, not ${JSON.stringify(flags.compression)}`);
    return new ToolchainCache({
      dir: flags.dir,
      ...(flags.registry && { registry: flags.registry, registryOptions: transportOptions(options).registry ?? {} }),
      ...(flags.installer && { installer: flags.installer }),
      ...(flags.compression && { codec: flags.compression as 'gzip' | 'zstd' }),
      ...(log && { log }),
    });
  };
  const keyOf = async (tool: string, version: string, flags: CommonFlags) => {
    const { toolchainKey } = await import('../cache/key.js');
    const platform = globals().platform;
    return toolchainKey(tool, version, { ...(platform && { platform }), ...(flags.libc && { libc: flags.libc }) });
  };

  common(cache.command('get'))
    .summary('print the path of a ready toolchain: local store, else registry, else installer')
    .argument('<tool>', 'tool name, e.g. node, python, go')
    .argument('<version>', 'exact version, e.g. 20.19.0')
    .description(
      'print the path of a ready toolchain: a local hit answers at once; else it is pulled from --registry (digest verified); else --installer runs ' +
        '(sh -c CMD with TOOL, VERSION and PREFIX in its environment; it installs into PREFIX), and the result is pushed and kept. ' +
        'Concurrent gets of one key install once; a corrupt local entry is fetched again. --platform OS/ARCH (global) picks another platform',
    )
    .option('--installer <cmd>', 'installer command for a miss the registry cannot answer ($BUILDFLEET_CACHE_INSTALLER sets the default)', process.env.BUILDFLEET_CACHE_INSTALLER)
    .option('--compression <codec>', 'codec of the layer pushed after an install: gzip (every OCI tool reads it) or zstd', 'gzip')
    .option('--verify', 'compare every file of a local entry with its recorded stats, not only the check set', false)
    .action(async (tool: string, version: string, flags: CommonFlags & { installer?: string; compression: string; verify: boolean }) => {
      const key = await keyOf(tool, version, flags);
      // A local hit loads the store alone: the registry client, codecs and metrics cost more start-up than the hit itself.
      if (!flags.verify) {
        const started = performance.now();
        const { LocalStore } = await import('../cache/store.js');
        const hit = new LocalStore(flags.dir).lookup(key);
        if (hit.state === 'hit') {
          if (globals().json) printJson({ path: hit.path, source: 'local', ...(hit.record.digest && { digest: hit.record.digest }), seconds: (performance.now() - started) / 1000, key });
          else process.stdout.write(`${hit.path}\n`);
          return;
        }
      }
      const toolchains = await open(flags);
      try {
        const result = await toolchains.get(key, { verify: flags.verify });
        if (globals().json) printJson({ path: result.path, source: result.source, ...(result.digest && { digest: result.digest }), seconds: result.seconds, key: result.key });
        else process.stdout.write(`${result.path}\n`);
      } finally {
        await toolchains.close();
      }
    });

  common(cache.command('put'))
    .argument('<tool>', 'tool name')
    .argument('<version>', 'version')
    .argument('<path>', 'the installed tree (what PREFIX held)')
    .description('pack an existing tree and push it to --registry for TOOL VERSION on this platform (or --platform); the local store is not changed')
    .option('--compression <codec>', 'gzip or zstd', 'gzip')
    .action(async (tool: string, version: string, path: string, flags: CommonFlags & { compression: string }) => {
      const key = await keyOf(tool, version, flags);
      const { stat } = await import('node:fs/promises');
      if (!(await stat(path).then((s) => s.isDirectory(), () => false))) {
        const { BuildfleetError } = await import('../imagebuilder/errors.js');
        throw new BuildfleetError('usage', `${path} is not a directory`);
      }
      const toolchains = await open(flags);
      try {
        const pushed = await toolchains.put(key, path);
        if (globals().json) printJson(pushed);
        else process.stdout.write(`${pushed.reference}@${pushed.digest} (${formatBytes(pushed.size)})\n`);
      } finally {
        await toolchains.close();
      }
    });

  withDir(cache.command('ls'))
    .description('list the entries of the local store: tool, version, arch, size on disk, last use')
    .action(async (flags: { dir: string }) => {
      const toolchains = await open({ dir: flags.dir });
      const entries = await toolchains.list();
      if (globals().json) return printJson(entries);
      const rows = entries.map((e) => [e.tool, e.version, e.arch, formatBytes(e.size), e.lastUsed.replace('T', ' ').slice(0, 19), e.source]);
      process.stdout.write(table([['TOOL', 'VERSION', 'ARCH', 'SIZE', 'LAST USED (UTC)', 'SOURCE'], ...rows]) + '\n');
    });

  withDir(cache.command('gc'))
    .summary('remove least recently used entries down to a size or up to free space')
    .description('remove least recently used entries until the entries total at most --max-size, or the disk has --min-free free; entries in use (their lock held) stay. The node agent calls this when the workload disk passes its threshold')
    .option('--max-size <size>', 'e.g. 20G, 500M, or bytes')
    .option('--min-free <size>', 'free space to reach on the cache\'s disk, e.g. 10G')
    .action(async (flags: { dir: string; maxSize?: string; minFree?: string }) => {
      const { parseSize } = await import('../cache/gc.js');
      const target = { ...(flags.maxSize !== undefined && { maxSize: parseSize(flags.maxSize, '--max-size') }), ...(flags.minFree !== undefined && { minFree: parseSize(flags.minFree, '--min-free') }) };
      const toolchains = await open({ dir: flags.dir });
      const result = await toolchains.gc(target);
      if (globals().json) return printJson(result);
      for (const removed of result.removed) process.stdout.write(`removed ${removed.path} (${formatBytes(removed.size)}, last used ${removed.lastUsed})\n`);
      for (const path of result.skippedInUse) process.stdout.write(`kept ${path}: in use\n`);
      process.stdout.write(`entries: ${formatBytes(result.sizeBefore)} -> ${formatBytes(result.sizeAfter)}; free: ${formatBytes(result.freeAfter)}\n`);
    });
}
