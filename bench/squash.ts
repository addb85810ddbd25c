import { readFile, readdir, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { DockerEngine, RegistryServer, importBusyboxBase } from '../nodepool/daemons/index.js';
import { openDestination, openSource } from '../imagebuilder/transports/index.js';
import { copyImage } from '../imagebuilder/copy/copy.js';
import { digestHex } from '../imagebuilder/oci/digest.js';
import { userCliCommand, exitOnHelp, numberArg, tempDir } from './harness.js';
import { writeSquashBenchContext, type SquashBenchImage } from './squash-image.js';
import { generateImage } from './image-generator.js';
import { markdownTable, median } from './stats.js';

/**
 * Registry -> registry squash + push: `buildfleet image squash` (at each K asked for) against
 * `docker build --squash` (experimental daemon, every build step cached, so it only squashes) +
 * `docker push`, and the floor: the fastest standard tools on every core at the same level,
 * `libdeflate-gunzip` of every input layer (a process per layer, one per core at a time), then
 * `libdeflate-gzip -6` of the squashed tar cut into one piece per core. pigz, slower than that,
 * is there for reference only. docker squashes only the layers above FROM (here: all but the
 * busybox base); buildfleet squashes them all, base included.
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

/** What to measure: our squash at each K in `outputs`, and `runs` rounds of ours and the floor. */
export type SquashBenchOptions = { outputs?: number[]; runs?: number };

/** The largest file in a directory (an OCI layout's flat squash: its one layer; config and manifest are small). */
async function largestFile(dir: string): Promise<string> {
  let largest = -1;
  let path = '';
  for (const name of await readdir(dir)) {
    const { size } = await stat(join(dir, name));
    if (size > largest) [largest, path] = [size, join(dir, name)];
  }
  return path;
}

export async function benchSquash(image: SquashBenchImage, log: (line: string) => void = () => {}, options: SquashBenchOptions = {}): Promise<SquashBenchResult> {
  const outputs = options.outputs ?? [1];
  const runs = Math.max(1, options.runs ?? 1);
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
    const inspect = JSON.parse((await execa(process.execPath, [...userCliCommand(), '--json', 'image', 'inspect', layered])).stdout) as { layers: Array<{ digest: string; size: number }> };

    // The floor's inputs, prepared once outside its timing: the registry's blob files, and the
    // squashed tar (a flat squash) cut into one piece per core.
    const cores = availableParallelism();
    const blobDir = join(registry.storageDir, 'docker/registry/v2/blobs/sha256');
    const blobPaths = inspect.layers.map((layer) => join(blobDir, digestHex(layer.digest).slice(0, 2), digestHex(layer.digest), 'data'));
    const flat = join(work.path, 'flat');
    await execa(process.execPath, [...userCliCommand(), '--quiet', 'image', 'squash', '--compression', 'none', layered, `oci:${flat}:flat`]);
    const tarFile = await largestFile(join(flat, 'blobs/sha256'));
    const parts = join(work.path, 'parts');
    await execa('sh', ['-c', `mkdir -p ${parts} && split -n ${cores} ${tarFile} ${parts}/part.`]);
    const floors = { gunzip: blobPaths.join(' '), parts: `${parts}/part.*` };

    const ours = new Map<number, Array<SquashRow & { stdout: string }>>(outputs.map((k) => [k, []]));
    const floorRuns: SquashRow[] = [];
    for (let round = 1; round <= runs; round++) {
      for (const k of outputs) {
        log(`round ${round}/${runs}: buildfleet image squash --layers ${k} (registry -> registry)`);
        ours.get(k)!.push(await timed(process.execPath, [...userCliCommand(), '--json', 'image', 'squash', '--layers', String(k), layered, `${registry.host}/bench/image:squashed-k${k}`]));
      }
      log(`round ${round}/${runs}: floor: libdeflate-gunzip of the input layers, libdeflate-gzip -6 of the squashed tar, ${cores} cores`);
      floorRuns.push(sumRows(await timed('sh', ['-c', `printf '%s\\n' ${floors.gunzip} | xargs -P ${cores} -n 1 libdeflate-gunzip -c > /dev/null`]), await timed('sh', ['-c', `ls ${floors.parts} | xargs -P ${cores} -n 1 libdeflate-gzip -6 -c > /dev/null`])));
    }
    const report = JSON.parse(ours.get(outputs[0]!)![0]!.stdout) as { bytes: { uncompressedAfter: number; compressedAfter: number } };

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

    // pigz, the usual parallel gzip tool, on every core: not the floor (libdeflate is about twice
    // as fast at level 6), kept to show what the standard tool pair takes.
    log('pigz -d of the input layers, pigz -6 of the squashed tar, all cores (for reference)');
    const pigz = sumRows(
      await timed('sh', ['-c', `printf '%s\\n' ${floors.gunzip} | xargs -P ${cores} -n 1 pigz -dc > /dev/null`]),
      await timed('sh', ['-c', `pigz -p ${cores} -6 -c ${tarFile} > /dev/null`]),
    );

    const floorWall = floorRuns.map((row) => row.wallS);
    const rows: BenchRow[] = [
      ...outputs.map((k) => oursRow(`buildfleet image squash --layers ${k} (incl. push)`, ours.get(k)!, floorWall)),
      { what: 'docker build --squash + docker push (peer)', wallS: [dockerWall], cpuS: cpuAfter - cpuBefore, ...(dockerRss !== undefined && { peakRssMb: dockerRss }), perFloor: [dockerWall / median(floorWall)] },
      { what: `${FLOOR_LABEL} (${cores} cores)`, wallS: floorWall, cpuS: median(floorRuns.map((row) => row.cpuS)), perFloor: floorWall.map(() => 1) },
      { what: `pigz -d input + pigz -6 output (${cores} cores; not the floor)`, wallS: [pigz.wallS], cpuS: pigz.cpuS, perFloor: [pigz.wallS / median(floorWall)] },
    ];
    const table = markdownTable(
      ['', 'wall s', 'CPU s', 'peak RSS MB', 'this / floor', 'docker / this'],
      rows.map((row) => [row.what, spread(row.wallS), row.cpuS.toFixed(1), row.peakRssMb !== undefined ? row.peakRssMb.toFixed(0) : '-', spread(row.perFloor, 2), (dockerWall / median(row.wallS)).toFixed(2)]),
    );
    return {
      image: { ...image, inputLayers: inspect.layers.length, compressedBytes: inspect.layers.reduce((s, l) => s + l.size, 0) },
      rows: rows.map(({ what, wallS, cpuS, peakRssMb }) => ({ what, wallS: median(wallS), cpuS, ...(peakRssMb !== undefined && { peakRssMb }) })),
      table:
        `${table}\n\n` +
        `${runs > 1 ? `Median of ${runs} rounds (min-max); each round runs ours then the floor, and "this / floor" is per round. ` : ''}` +
        `The floor decompresses one input layer per process, ${cores} at once, then compresses the squashed tar cut into ${cores} pieces, one process each: ` +
        `the pieces' gzip members, concatenated, are one valid gzip stream (RFC 1952). ` +
        `squashed: ${(report.bytes.uncompressedAfter / 1e9).toFixed(2)} GB uncompressed, ${(report.bytes.compressedAfter / 1e9).toFixed(2)} GB gzip. ` +
        `docker's RSS is dockerd's peak since start (VmHWM); its CPU is dockerd + containerd.`,
    };
  } finally {
    await Promise.allSettled([engine?.stop(), registry?.stop()]);
    await work.remove();
  }
}

/** The floor row's label; tests look for it. */
export const FLOOR_LABEL = 'floor: libdeflate-gunzip input + libdeflate-gzip -6 output';

/** A contender over the rounds: wall times and its ratios to the floor of the same round. */
type BenchRow = { what: string; wallS: number[]; cpuS: number; peakRssMb?: number; perFloor: number[] };

function oursRow(what: string, runs: SquashRow[], floorWall: number[]): BenchRow {
  const rss = runs.flatMap((run) => (run.peakRssMb !== undefined ? [run.peakRssMb] : []));
  return { what, wallS: runs.map((run) => run.wallS), cpuS: median(runs.map((run) => run.cpuS)), ...(rss.length > 0 && { peakRssMb: Math.max(...rss) }), perFloor: runs.map((run, i) => run.wallS / floorWall[i]!) };
}

/** Two steps one after the other, as one row. */
function sumRows(a: SquashRow, b: SquashRow): SquashRow {
  return { what: '', wallS: a.wallS + b.wallS, cpuS: a.cpuS + b.cpuS };
}

/** "median" for one value, "median (min-max)" for several. */
function spread(values: number[], digits = 1): string {
  const m = median(values).toFixed(digits);
  return values.length < 2 ? m : `${m} (${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)})`;
}

/**
 * Peak RSS of `buildfleet image squash` (registry -> registry) on an image with many files: the
 * index, merge and plan hold every entry at once, so this is where memory per entry shows.
 * The image comes from image-generator (mostly 1-32 KB incompressible files).
 */
export async function benchSquashMemory(shape: { layers: number; filesPerLayer: number; outputs?: number[] }, log: (line: string) => void = () => {}): Promise<{ rows: SquashRow[]; table: string }> {
  const work = await tempDir('buildfleet-bench-squash-mem-');
  let registry: RegistryServer | undefined;
  try {
    registry = await RegistryServer.start({ root: join(work.path, 'registry') });
    const files = shape.layers * shape.filesPerLayer;
    log(`generating a ${shape.layers}-layer image with ${files} files`);
    const source = `${registry.host}/bench/many:v1`;
    // Sizes follow the generator's mix (90% 1-32 KB); the large tenth shares what is left of ~150 MB a layer.
    await generateImage(await openDestination(source), { layers: shape.layers, filesPerLayer: shape.filesPerLayer, totalBytes: shape.layers * 150e6 });
    const rows: SquashRow[] = [];
    for (const k of shape.outputs ?? [1]) {
      log(`buildfleet image squash --layers ${k} (registry -> registry), peak RSS`);
      const run = await timed(process.execPath, [...userCliCommand(), '--quiet', 'image', 'squash', '--layers', String(k), source, `${registry.host}/bench/many:squashed-k${k}`]);
      rows.push({ what: `buildfleet image squash --layers ${k}, ${files} files in ${shape.layers} layers`, wallS: run.wallS, cpuS: run.cpuS, ...(run.peakRssMb !== undefined && { peakRssMb: run.peakRssMb }) });
    }
    const table = markdownTable(['', 'wall s', 'CPU s', 'peak RSS MB', 'target MB'], rows.map((row) => [row.what, row.wallS.toFixed(1), row.cpuS.toFixed(1), row.peakRssMb?.toFixed(0) ?? '-', '300']));
    return { rows, table };
  } finally {
    await registry?.stop();
    await work.remove();
  }
}

const usage = `node dist/bench/squash.js [--layers 40] [--mb 1000] [--files 100000] [--outputs 1,4] [--runs 1] [--memory [--memory-layers 20] [--memory-files-per-layer 10000]]
  --layers, --mb, --files   shape of the docker-built image squashed against docker build --squash and the libdeflate floor
  --outputs K,K             squash to each of these layer counts (image squash --layers K); default 1
  --runs N                  rounds of ours and the floor (median, min-max, and the ratio per round); default 1
  --memory                  also measure peak RSS on a generated image with many files (default 20 x 10000)
  --only-memory             only that`;

/** `--NAME a,b,c` from the command line as numbers, else fallback. */
function numberListArg(name: string, fallback: number[]): number[] {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]!.split(',').map(Number) : fallback;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  exitOnHelp(usage);
  const log = (line: string) => process.stderr.write(line + '\n');
  const outputs = numberListArg('outputs', [1]);
  if (!process.argv.includes('--only-memory')) {
    const image = { layers: numberArg('layers', 40), totalBytes: numberArg('mb', 1000) * 1e6, files: numberArg('files', 100_000) };
    const result = await benchSquash(image, log, { outputs, runs: numberArg('runs', 1) });
    process.stdout.write(`registry -> registry squash + push: ${result.image.inputLayers} layers in, ${(result.image.compressedBytes / 1e9).toFixed(2)} GB compressed, ${image.files} files\n\n${result.table}\n`);
  }
  if (process.argv.includes('--memory') || process.argv.includes('--only-memory')) {
    const memory = await benchSquashMemory({ layers: numberArg('memory-layers', 20), filesPerLayer: numberArg('memory-files-per-layer', 10_000), outputs }, log);
    process.stdout.write(`\nmemory: registry -> registry squash + push of a generated image\n\n${memory.table}\n`);
  }
}
