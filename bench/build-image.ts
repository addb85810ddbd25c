import { Readable } from 'node:stream';
import { busyboxRootfs } from '../nodepool/daemons/base-image.js';
import { compressor } from '../imagebuilder/compress/codecs.js';
import { pipeOn } from '../imagebuilder/compress/streams.js';
import { buildManifest } from '../imagebuilder/mutate/manifest.js';
import { DigestStream } from '../imagebuilder/oci/digest.js';
import { configMediaType, layerMediaType, manifestMediaType } from '../imagebuilder/oci/media-types.js';
import type { Descriptor } from '../imagebuilder/oci/schemas.js';
import type { TarHeader } from '../imagebuilder/tar/entry.js';
import { TarWriter } from '../imagebuilder/tar/writer.js';
import type { ImageDestination } from '../imagebuilder/transports/types.js';
import { fileSizes, syntheticConfig } from './image-generator.js';
import { sourceLikeContent } from './squash-image.js';

/**
 * A synthetic multi-language build image, written straight into a destination (no daemon): a
 * busybox base (so it runs), one layer per toolchain under /opt/LANG/VERSION with many small
 * files, part text and part binary, and, as real build images pile them up, layers that delete
 * what earlier ones added (whiteouts, an opaque directory) and layers that copy files up
 * (chmod/chown of files an earlier layer made). Deterministic: the same preset gives the same
 * digests. The time-to-ready benchmark pulls it layered, and squashed to K layers.
 */

export type BuildImagePreset = {
  toolchains: number;
  bytesPerToolchain: number;
  filesPerToolchain: number;
  /** After every this many toolchain layers, one layer that deletes part of an earlier one. */
  deleteEvery: number;
  /** After every this many toolchain layers, one layer that copies part of an earlier one up. */
  copyUpEvery: number;
};

export const BUILD_IMAGE_PRESETS = {
  /** For tests: about 12 layers, 10 MB, 1,200 files. */
  small: { toolchains: 6, bytesPerToolchain: 1_600_000, filesPerToolchain: 200, deleteEvery: 3, copyUpEvery: 4 },
  /** The field's kind of image: about 70 layers, 2.5 GB, 150,000 files. */
  large: { toolchains: 58, bytesPerToolchain: 43_000_000, filesPerToolchain: 2_600, deleteEvery: 8, copyUpEvery: 11 },
} satisfies Record<string, BuildImagePreset>;

export type BuildImagePresetName = keyof typeof BUILD_IMAGE_PRESETS;

const LANGUAGES = ['node', 'python', 'ruby', 'java', 'go', 'rust', 'dotnet', 'php', 'perl', 'gradle'];
const FILES_PER_DIR = 100;

/** Where toolchain n lives, e.g. opt/python/3.7 */
export function toolchainDir(n: number): string {
  return `opt/${LANGUAGES[n % LANGUAGES.length]}/${Math.floor(n / LANGUAGES.length) + 8}.${n % 7}`;
}

type Entry = { header: TarHeader; body?: Buffer };
const mtime = (layer: number) => ({ sec: 1_700_000_000 + layer * 60, nsec: 0 });
const dir = (path: string, layer: number, mode = 0o755): Entry => ({ header: { path, type: 'directory', mode, uid: 0, gid: 0, size: 0, mtime: mtime(layer), xattrs: new Map() } });
const file = (path: string, layer: number, body: Buffer, mode = 0o644, owner = 0): Entry => ({ header: { path, type: 'file', mode, uid: owner, gid: owner, size: body.length, mtime: mtime(layer), xattrs: new Map() }, body });
const whiteout = (parent: string, name: string, layer: number): Entry => file(`${parent}/.wh.${name}`, layer, Buffer.alloc(0));

/** The files of toolchain n: bin/ (a few big ones), lib/dNN/ and share/dNN/ (many small ones). */
function* toolchainFiles(preset: BuildImagePreset, n: number): Generator<{ path: string; size: number; seed: string }> {
  const root = toolchainDir(n);
  const sizes = fileSizes(preset.bytesPerToolchain, preset.filesPerToolchain, n + 1).sort((a, b) => b - a);
  for (const [i, size] of sizes.entries()) {
    const where = i < 8 ? 'bin' : i % 3 === 0 ? `share/d${Math.floor(i / FILES_PER_DIR)}` : `lib/d${Math.floor(i / FILES_PER_DIR)}`;
    yield { path: `${root}/${where}/f${i}`, size, seed: `${root}/${i}` };
  }
}

function* toolchainLayer(preset: BuildImagePreset, n: number, layer: number): Generator<Entry> {
  const root = toolchainDir(n);
  for (const parent of ['opt', root.slice(0, root.lastIndexOf('/')), root]) yield dir(parent, layer);
  const made = new Set<string>();
  for (const { path, size, seed } of toolchainFiles(preset, n)) {
    // Each directory below the root once, before its first file: bin, lib, lib/dN, share, share/dN.
    const below = path.slice(root.length + 1).split('/').slice(0, -1);
    for (let depth = 1; depth <= below.length; depth++) {
      const ancestor = `${root}/${below.slice(0, depth).join('/')}`;
      if (made.has(ancestor)) continue;
      made.add(ancestor);
      yield dir(ancestor, layer);
    }
    yield file(path, layer, sourceLikeContent(seed, size), path.includes('/bin/') ? 0o755 : 0o644);
  }
}

/** Deletes toolchain n's share/ (a whiteout) and replaces its lib/d0 (an opaque directory with one new file). */
function* deletionLayer(n: number, layer: number): Generator<Entry> {
  const root = toolchainDir(n);
  for (const parent of ['opt', root.slice(0, root.lastIndexOf('/')), root, `${root}/lib`]) yield dir(parent, layer);
  yield whiteout(root, 'share', layer);
  yield dir(`${root}/lib/d0`, layer);
  yield file(`${root}/lib/d0/.wh..wh..opq`, layer, Buffer.alloc(0));
  yield file(`${root}/lib/d0/REPLACED`, layer, Buffer.from(`lib/d0 of ${root} replaced in layer ${layer}\n`));
}

/** Copies toolchain n's bin/ up: the same bytes, new mode and owner (what `chmod -R`, `chown -R` do). */
function* copyUpLayer(preset: BuildImagePreset, n: number, layer: number): Generator<Entry> {
  const root = toolchainDir(n);
  for (const parent of ['opt', root.slice(0, root.lastIndexOf('/')), root, `${root}/bin`]) yield dir(parent, layer);
  for (const { path, size, seed } of toolchainFiles(preset, n)) {
    if (path.includes('/bin/')) yield file(path, layer, sourceLikeContent(seed, size), 0o750, 1000);
  }
}

/** The layers in order, each a generator of its entries (busybox base apart). */
function layerPlan(preset: BuildImagePreset): Array<{ createdBy: string; entries: (layer: number) => Iterable<Entry> }> {
  const plan: Array<{ createdBy: string; entries: (layer: number) => Iterable<Entry> }> = [];
  for (let n = 0; n < preset.toolchains; n++) {
    plan.push({ createdBy: `install ${toolchainDir(n)}`, entries: (layer) => toolchainLayer(preset, n, layer) });
    const done = n + 1;
    // Deletes and copies up toolchains a few layers down, as later RUN steps of a Dockerfile do.
    if (done % preset.deleteEvery === 0) plan.push({ createdBy: `rm -rf /${toolchainDir(done - 2)}/share`, entries: (layer) => deletionLayer(done - 2, layer) });
    if (done % preset.copyUpEvery === 0) plan.push({ createdBy: `chown -R 1000 /${toolchainDir(done - 3)}/bin`, entries: (layer) => copyUpLayer(preset, done - 3, layer) });
  }
  return plan;
}

function tarOf(entries: Iterable<Entry>): Readable {
  const writer = new TarWriter();
  void (async () => {
    for (const entry of entries) await writer.add(entry.header, entry.body);
    await writer.finish();
  })().catch((err: Error) => writer.stream.destroy(err));
  return writer.stream;
}

export type WrittenBuildImage = { manifestDigest: string; layers: Descriptor[]; uncompressedBytes: number };

export async function writeBuildImage(destination: ImageDestination, preset: BuildImagePreset, log: (line: string) => void = () => {}): Promise<WrittenBuildImage> {
  // As the destination wants it: an OCI layout takes OCI manifests, an archive plain tars.
  const wanted = destination.preferences;
  const format = wanted.manifestFormat === 'keep' ? 'docker' : wanted.manifestFormat;
  const compression = wanted.layerCompression === 'none' ? 'none' : 'gzip';
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  const history: string[] = [];
  let uncompressedBytes = 0;
  const put = async (createdBy: string, makeTar: () => Promise<Readable>) => {
    let diff: DigestStream | undefined;
    const descriptor = await destination.putBlob(async () => {
      diff = new DigestStream();
      return pipeOn(pipeOn(await makeTar(), diff), compressor(compression, 6));
    }, { mediaType: layerMediaType(format, compression) });
    layers.push(descriptor);
    diffIds.push(diff!.digest);
    uncompressedBytes += diff!.size;
    history.push(createdBy);
  };
  await put('busybox base', async () => (await busyboxRootfs()) as unknown as Readable);
  const plan = layerPlan(preset);
  for (const [i, step] of plan.entries()) {
    log(`build image: layer ${i + 2}/${plan.length + 1}: ${step.createdBy}`);
    await put(step.createdBy, async () => tarOf(step.entries(i + 1)));
  }
  const config = syntheticConfig(diffIds, (i) => history[i]!);
  const configDescriptor = await destination.putBlob(async () => Readable.from([config]), { mediaType: configMediaType(format) });
  const manifestDigest = await destination.putManifest(buildManifest(format, configDescriptor, layers), manifestMediaType(format));
  await destination.commit();
  return { manifestDigest, layers, uncompressedBytes };
}
