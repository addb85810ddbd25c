import { readFile, readdir, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { DockerEngine, RegistryServer, importBusyboxBase } from '../daemons/index.js';
import { openDestination, openSource } from '../imagebuilder/transports/index.js';
import { copyImage } from '../imagebuilder/copy/copy.js';
import { digestHex } from '../imagebuilder/oci/digest.js';
import { cliCommand, exitOnHelp, numberArg, tempDir } from './harness.js';
import { writeSquashBenchContext, type SquashBenchImage } from './squash-image.js';
import { generateImage } from './image-generator.js';
import { markdownTable } from './stats.js';

/**
 * Registry -> registry squash + push: `buildfleet image squash` against `docker build --squash`
 * (experimental daemon, every build step cached, so it only squashes) + `docker push`, and the
 * floor: decompress every input layer, then compress the squashed tar, with pigz on all cores.
 * docker squashes only the layers above FROM (here: all but the busybox base); buildfleet
 * squashes them all, base included.
 */
export type SquashRow = { what: string; wallS: number; cpuS: number; peakRssMb?: number };
export type SquashBenchResult = { image: SquashBenchImage & { inputLayers: number; compressedBytes: number }; rows: SquashRow[]; table: string };

/** CPU seconds a process has used so far (utime + stime, clock ticks of 100 Hz). */
async function cpuSeconds(pid: number | undefined): Promise<number> {
  if (!pid) return 0;
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function peakRssMb(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  const match = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : undefined;
}

/**
 * Each contender starts with nothing dirty in the page cache: the build and the copies before it
 * leave GBs to write back, and the kernel's flusher would otherwise compete with whoever runs first.
 */
async function settleDisk(): Promise<void> {
  await execa('sync');
}

/** Runs a command under /usr/bin/time: wall, CPU (user + sys) and peak RSS of it and its children. */
async function timed(command: string, args: string[], env: Record<string, string> = {}): Promise<SquashRow & { stdout: string }> {
  await settleDisk();
  const result = await execa('/usr/bin/time', ['-f', 'BFTIME %e %U %S %M', command, ...args], { env, reject: false });
  const line = result.stderr.split('\n').find((l) => l.startsWith('BFTIME '));
  if (result.exitCode !== 0 || !line) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr.slice(-500)}`);
  const [, wall, user, sys, rss] = line.split(' ').map(Number) as [unknown, number, number, number, number];
  return { what: '', wallS: wall, cpuS: user + sys, peakRssMb: rss / 1024, stdout: result.stdout };
}

export async function benchSquash(image: SquashBenchImage, log: (line: string) => void = () => {}): Promise<SquashBenchResult> {
  const work = await tempDir('buildfleet-bench-squash-');
  let engine: DockerEngine | undefined;
  let registry: RegistryServer | undefined;
  try {
    [engine, registry] = await Promise.all([DockerEngine.start({ root: join(work.path, 'engine'), experimental: true }), RegistryServer.start({ root: join(work.path, 'registry') })]);
    await importBusyboxBase(engine.docker, 'bench/base:latest');
    log(`writing a ${image.layers}-layer, ${(image.totalBytes / 1e9).toFixed(2)} GB, ${image.files}-file build context`);
    const context = join(work.path, 'context');
    await writeSquashBenchContext(context, image, 'bench/base:latest');
    const env = { DOCKER_HOST: engine.host };
    log('docker build (layered; fills the build cache)');
    await execa('docker', ['build', '--network', 'none', '-q', '-t', 'bench/image:layered', context], { env });
    const layered = `${registry.host}/bench/image:layered`;
    await copyImage(await openSource('docker-daemon:bench/image:layered', { docker: engine.docker, tmpDir: work.path }), await openDestination(layered));
    const inspect = JSON.parse((await execa(process.execPath, [...cliCommand(), '--json', 'image', 'inspect', layered])).stdout) as { layers: Array<{ digest: string; size: number }> };

    log('buildfleet image squash (registry -> registry)');
    const ours = await timed(process.execPath, [...cliCommand(), '--json', 'image', 'squash', layered, `${registry.host}/bench/image:squashed`]);
    const report = JSON.parse(ours.stdout) as { bytes: { uncompressedAfter: number; compressedAfter: number } };

    log('docker build --squash + docker push');
    const daemonPids = [engine.dockerdPid, engine.containerdPid];
    await settleDisk();
    const cpuBefore = (await Promise.all(daemonPids.map(cpuSeconds))).reduce((a, b) => a + b, 0);
    const dockerStarted = performance.now();
    await execa('docker', ['build', '--squash', '--network', 'none', '-q', '-t', `${registry.host}/bench/image:docker-squashed`, context], { env });
    await execa('docker', ['push', '-q', `${registry.host}/bench/image:docker-squashed`], { env });
    const dockerWall = (performance.now() - dockerStarted) / 1000;
    const cpuAfter = (await Promise.all(daemonPids.map(cpuSeconds))).reduce((a, b) => a + b, 0);
    const dockerRss = await peakRssMb(engine.dockerdPid);

    log('floor: pigz -d of the input layers, pigz of the squashed tar, all cores');
    const cores = availableParallelism();
    const blobDir = join(registry.storageDir, 'docker/registry/v2/blobs/sha256');
    const blobPaths = inspect.layers.map((layer) => join(blobDir, digestHex(layer.digest).slice(0, 2), digestHex(layer.digest), 'data'));
    const decompress = await timed('sh', ['-c', `printf '%s\\n' ${blobPaths.join(' ')} | xargs -P ${cores} -n 1 sh -c 'pigz -dc "$0" > /dev/null'`]);
    const flat = join(work.path, 'flat');
    await execa(process.execPath, [...cliCommand(), '--quiet', 'image', 'squash', '--compression', 'none', layered, `oci:${flat}:flat`]);
    // The flat squash's largest blob is its one layer (the config and manifest are small).
    let tarFile = '';
    let largest = -1;
    for (const name of await readdir(join(flat, 'blobs/sha256'))) {
      const { size } = await stat(join(flat, 'blobs/sha256', name));
      if (size > largest) [largest, tarFile] = [size, join(flat, 'blobs/sha256', name)];
    }
    const compress = await timed('sh', ['-c', `pigz -p ${cores} -6 -c ${tarFile} > /dev/null`]);
    const floor: SquashRow = { what: `floor: pigz -d input + pigz -6 output (${cores} cores)`, wallS: decompress.wallS + compress.wallS, cpuS: decompress.cpuS + compress.cpuS };
    // The same floor with the compressor buildfleet uses where its addon is built (libdeflate,
    // level 6): the squashed tar cut into one part per core, each compressed by libdeflate-gzip.
    let sameCompressor: SquashRow | undefined;
    if ((await execa('sh', ['-c', 'command -v libdeflate-gzip'], { reject: false })).exitCode === 0) {
      const parts = join(work.path, 'parts');
      await execa('sh', ['-c', `mkdir -p ${parts} && split -n ${cores} ${tarFile} ${parts}/part.`]);
      const libdeflate = await timed('sh', ['-c', `ls ${parts}/part.* | xargs -P ${cores} -n 1 sh -c 'libdeflate-gzip -6 -c "$0" > /dev/null'`]);
      sameCompressor = { what: `floor: pigz -d input + libdeflate-gzip -6 output (${cores} cores)`, wallS: decompress.wallS + libdeflate.wallS, cpuS: decompress.cpuS + libdeflate.cpuS };
    }

    const rows: SquashRow[] = [
      { what: 'buildfleet image squash (incl. push)', wallS: ours.wallS, cpuS: ours.cpuS, ...(ours.peakRssMb !== undefined && { peakRssMb: ours.peakRssMb }) },
      { what: 'docker build --squash + docker push (peer)', wallS: dockerWall, cpuS: cpuAfter - cpuBefore, ...(dockerRss !== undefined && { peakRssMb: dockerRss }) },
      floor,
      ...(sameCompressor ? [sameCompressor] : []),
    ];
    const table = markdownTable(
      ['', 'wall s', 'CPU s', 'peak RSS MB', 'docker / this', 'this / floor'],
      rows.map((row) => [row.what, row.wallS.toFixed(1), row.cpuS.toFixed(1), row.peakRssMb !== undefined ? row.peakRssMb.toFixed(0) : '-', (dockerWall / row.wallS).toFixed(2), (row.wallS / floor.wallS).toFixed(2)]),
    );
    return {
      image: { ...image, inputLayers: inspect.layers.length, compressedBytes: inspect.layers.reduce((s, l) => s + l.size, 0) },
      rows,
      table: `${table}\n\n${sameCompressor ? `buildfleet / the floor with its own compressor: ${(ours.wallS / sameCompressor.wallS).toFixed(2)}\n` : ''}squashed: ${(report.bytes.uncompressedAfter / 1e9).toFixed(2)} GB uncompressed, ${(report.bytes.compressedAfter / 1e9).toFixed(2)} GB gzip. docker's RSS is dockerd's peak since start (VmHWM); its CPU is dockerd + containerd.`,
    };
  } finally {
    await Promise.allSettled([engine?.stop(), registry?.stop()]);
    await work.remove();
  }
}

/**
 * Peak RSS of `buildfleet image squash` (registry -> registry) on an image with many files: the
 * index, merge and plan hold every entry at once, so this is where memory per entry shows.
 * The image comes from image-generator (mostly 1-32 KB incompressible files).
 */
export async function benchSquashMemory(shape: { layers: number; filesPerLayer: number }, log: (line: string) => void = () => {}): Promise<{ row: SquashRow; table: string }> {
  const work = await tempDir('buildfleet-bench-squash-mem-');
  let registry: RegistryServer | undefined;
  try {
    registry = await RegistryServer.start({ root: join(work.path, 'registry') });
    const files = shape.layers * shape.filesPerLayer;
    log(`generating a ${shape.layers}-layer image with ${files} files`);
    const source = `${registry.host}/bench/many:v1`;
    // Sizes follow the generator's mix (90% 1-32 KB); the large tenth shares what is left of ~150 MB a layer.
    await generateImage(await openDestination(source), { layers: shape.layers, filesPerLayer: shape.filesPerLayer, totalBytes: shape.layers * 150e6 });
    log('buildfleet image squash (registry -> registry), peak RSS');
    const run = await timed(process.execPath, [...cliCommand(), '--quiet', 'image', 'squash', source, `${registry.host}/bench/many:squashed`]);
    const row: SquashRow = { what: `buildfleet image squash, ${files} files in ${shape.layers} layers`, wallS: run.wallS, cpuS: run.cpuS, ...(run.peakRssMb !== undefined && { peakRssMb: run.peakRssMb }) };
    const table = markdownTable(['', 'wall s', 'CPU s', 'peak RSS MB', 'target MB'], [[row.what, row.wallS.toFixed(1), row.cpuS.toFixed(1), row.peakRssMb?.toFixed(0) ?? '-', '300']]);
    return { row, table };
  } finally {
    await registry?.stop();
    await work.remove();
  }
}

const usage = `node dist/bench/squash.js [--layers 40] [--mb 1000] [--files 100000] [--memory [--memory-layers 20] [--memory-files-per-layer 10000]]
  --layers, --mb, --files   shape of the docker-built image squashed against docker build --squash and the pigz floor
  --memory                  also measure peak RSS on a generated image with many files (default 20 x 10000)
  --only-memory             only that`;

if (import.meta.url === `file://${process.argv[1]}`) {
  exitOnHelp(usage);
  const log = (line: string) => process.stderr.write(line + '\n');
  if (!process.argv.includes('--only-memory')) {
    const image = { layers: numberArg('layers', 40), totalBytes: numberArg('mb', 1000) * 1e6, files: numberArg('files', 100_000) };
    const result = await benchSquash(image, log);
    process.stdout.write(`registry -> registry squash + push: ${result.image.inputLayers} layers in, ${(result.image.compressedBytes / 1e9).toFixed(2)} GB compressed, ${image.files} files\n\n${result.table}\n`);
  }
  if (process.argv.includes('--memory') || process.argv.includes('--only-memory')) {
    const memory = await benchSquashMemory({ layers: numberArg('memory-layers', 20), filesPerLayer: numberArg('memory-files-per-layer', 10_000) }, log);
    process.stdout.write(`\nmemory: registry -> registry squash + push of a generated image\n\n${memory.table}\n`);
  }
}
