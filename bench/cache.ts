import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { ToolchainCache } from '../cache/cache.js';
import { toolchainKey } from '../cache/key.js';
import { RegistryClient } from '../imagebuilder/registry/index.js';
import { RegistryServer } from '../nodepool/daemons/index.js';
import { userCliCommand, exitOnHelp, numberArg, tempDir } from './harness.js';
import { markdownTable, median } from './stats.js';

/**
 * The toolchain cache on one real toolchain made on this machine: the running Node.js (its
 * binary, lib/node_modules and include/node, copied by an installer command). Install (installer
 * + pack + push), local hit (in-process, and through the CLI beside a bare `node -e 0`), and
 * remote hit (a fresh cache directory: download, verify, extract, record) beside the floor:
 * `curl` of the same blob from the registry piped into `tar -x` with the same decompressor.
 */

export type CacheBenchResult = {
  toolchain: { files: number; bytes: number; blobBytes: number };
  ms: { install: number; localInProcess: number; localCli: number; nodeStartup: number; remote: number[]; floor: number[] };
  table: string;
};

/** Copies the running Node.js into PREFIX: a real toolchain of a few thousand files, made here without a network. */
export function nodeInstaller(): string {
  const root = dirname(dirname(process.execPath));
  return [
    'set -e',
    `R=${JSON.stringify(root)}`,
    'mkdir -p "$PREFIX/bin" "$PREFIX/lib" "$PREFIX/include"',
    'cp -a "$R/bin/node" "$PREFIX/bin/"',
    '[ ! -d "$R/lib/node_modules" ] || cp -a "$R/lib/node_modules" "$PREFIX/lib/"',
    '[ ! -d "$R/include/node" ] || cp -a "$R/include/node" "$PREFIX/include/"',
  ].join('; ');
}

async function timed(run: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await run();
  return performance.now() - started;
}

export async function benchCache(options: { runs?: number; log?: (line: string) => void } = {}): Promise<CacheBenchResult> {
  const runs = options.runs ?? 3;
  const log = options.log ?? (() => {});
  const work = await tempDir('buildfleet-bench-cache-');
  const registry = await RegistryServer.start({ root: join(work.path, 'registry') });
  const caches: ToolchainCache[] = [];
  try {
    const repo = `127.0.0.1:${registry.port}/toolchains`;
    const version = process.versions.node;
    const key = toolchainKey('node', version);
    const open = (dir: string, installer?: string) => {
      const cache = new ToolchainCache({ dir: join(work.path, dir), registry: repo, ...(installer && { installer }) });
      caches.push(cache);
      return cache;
    };

    log('install: installer + pack + push');
    const first = open('node-a', nodeInstaller());
    let installed!: Awaited<ReturnType<ToolchainCache['get']>>;
    const install = await timed(async () => (installed = await first.get(key)));
    const record = first.store.lookup(key);
    if (record.state !== 'hit') throw new Error('the installed entry is not a hit');

    log('local hit, in-process');
    const local: number[] = [];
    for (let i = 0; i < 20; i++) local.push(await timed(() => first.get(key)));

    log('local hit through the CLI, beside node -e 0');
    const cliArgs = [...userCliCommand(), 'cache', 'get', 'node', version, '--dir', join(work.path, 'node-a')];
    const cli: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < runs; i++) {
      cli.push(await timed(() => execa(process.execPath, cliArgs)));
      bare.push(await timed(() => execa(process.execPath, ['-e', '0'])));
    }

    const blobUrl = `http://127.0.0.1:${registry.port}/v2/toolchains/blobs/${installed.digest}`;
    const unpigz = spawnSync('sh', ['-c', 'command -v unpigz'], { stdio: 'ignore' }).status === 0;
    const remote: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < runs; i++) {
      log(`remote hit ${i + 1}/${runs} and floor`);
      const node = open(`node-r${i}`);
      remote.push(await timed(() => node.get(key)));
      const dest = join(work.path, `floor-${i}`);
      await mkdir(dest);
      floor.push(await timed(() => execa('sh', ['-c', `curl -sf ${blobUrl} | ${unpigz ? 'unpigz' : 'gzip -d'} | tar -x -C ${dest}`])));
    }

    const ms = { install, localInProcess: median(local), localCli: median(cli), nodeStartup: median(bare), remote, floor };
    const remoteMedian = median(remote);
    const floorMedian = median(floor);
    const fmt = (value: number) => (value < 100 ? value.toFixed(1) : value.toFixed(0));
    const table = markdownTable(
      ['path', 'median ms', 'beside', 'ratio'],
      [
        ['local hit, in-process (20 gets)', fmt(ms.localInProcess), 'goal 50 ms', `${(ms.localInProcess / 50).toFixed(2)}x of the goal`],
        ['local hit, `buildfleet cache get` (CLI)', fmt(ms.localCli), `node -e 0: ${fmt(ms.nodeStartup)}`, `${(ms.localCli / ms.nodeStartup).toFixed(2)}x of a bare node start`],
        [`remote hit (runs: ${remote.map(fmt).join(', ')})`, fmt(remoteMedian), `floor curl \\| ${unpigz ? 'unpigz' : 'gzip -d'} \\| tar -x: ${fmt(floorMedian)} (runs: ${floor.map(fmt).join(', ')})`, `${(remoteMedian / floorMedian).toFixed(2)}x of the floor (goal <= 1.5x)`],
        ['install (installer + pack + push)', fmt(install), `remote hit: ${fmt(remoteMedian)}`, `${(install / remoteMedian).toFixed(2)}x a remote hit`],
      ],
    );
    const client = new RegistryClient(`127.0.0.1:${registry.port}`);
    const blobBytes = (await client.hasBlob('toolchains', installed.digest!).finally(() => client.close())) ?? 0;
    return { toolchain: { files: record.record.files, bytes: record.record.bytes, blobBytes }, ms, table };
  } finally {
    await Promise.all(caches.map((cache) => cache.close()));
    await registry.stop();
    await work.remove();
  }
}

const usage = `node --import tsx bench/cache.ts [--runs 3]
  the running Node.js as a toolchain: install, local hit (in-process and CLI), remote hit, beside curl | tar -x of the same blob`;

if (import.meta.url === `file://${process.argv[1]}`) {
  exitOnHelp(usage);
  const result = await benchCache({ runs: numberArg('runs', 3), log: (line) => process.stderr.write(`${line}\n`) });
  const { files, bytes, blobBytes } = result.toolchain;
  process.stdout.write(`toolchain: node ${process.versions.node}, ${files} files, ${(bytes / 1e6).toFixed(0)} MB, blob ${(blobBytes / 1e6).toFixed(0)} MB (gzip), loopback registry\n\n${result.table}\n`);
}
