import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, symlink, link, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { DockerEngine } from '../daemons/index.js';
import { BASE_IMAGE, dockerBuild, startEngine, tempDir } from '../../test/helpers/real.js';
import { BLOCK, encodePaxRecord } from '../../imagebuilder/tar/fields.js';
import { END_OF_ARCHIVE, padded, rawHeader } from '../../test/helpers/raw-tar.js';
import { TarSplitRecorder } from './tar-split.js';
import { splitTar } from './split-tar.js';
import { extractLayerNatively, nativeExtraction } from './native-extract.js';

/**
 * The oracle: Docker Engine 20.10's own tar-split.json.gz. For every layer of images built with
 * real `docker build` (Docker's tar writer) and of tars imported as they are (GNU tar in gnu,
 * ustar and posix formats with its 10 KiB records, and a hand-made tar with a PAX global header,
 * a legacy directory and bytes after the end of the archive), splitTar + TarSplitRecorder over
 * the layer tar must give Docker's file line for line (byte for byte for docker build's layers;
 * for imported tars with bytes after the end blocks, the tail's split into segments may differ,
 * its bytes may not). Then Docker must take our files: in the
 * stopped engine each layer's file is replaced by ours, and `docker save` must give every layer
 * tar back with its diff_id. Real daemons, root.
 */
let engine: DockerEngine | undefined;
let work: { path: string; remove(): Promise<void> };
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** The images compared; `tar` is the file an imported one came from (its only layer, as given). */
type Image = { ref: string; tar?: string };
const images: Image[] = [];

before(async () => {
  work = await tempDir('buildfleet-tar-split-');
  engine = await startEngine({ root: join(work.path, 'engine') });
  await buildImage(engine, work.path);
  images.push({ ref: 'ts/built:latest' });
  const tars: Array<[string, string]> = [];
  for (const format of ['gnu', 'ustar', 'posix'] as const) tars.push([`ts/gnu-${format}:latest`, await gnuTar(work.path, format)]);
  for (const [name, bytes] of [['hand-made', handMadeTar()], ['odd-link', oddLinkTar()]] as const) {
    const path = join(work.path, `${name}.tar`);
    await writeFile(path, bytes);
    tars.push([`ts/${name}:latest`, path]);
  }
  for (const [ref, tar] of tars) {
    await engine.cli(['import', tar, ref]);
    images.push({ ref, tar });
  }
}, { timeout: 300_000 });

after(async () => {
  await engine?.stop();
  await work?.remove();
});

/** Files, directories, a symlink, a hardlink, a whiteout, an opaque directory, odd names, empty and large files, an xattr. */
async function buildImage(docker: DockerEngine, dir: string): Promise<void> {
  const stage = join(dir, 'caps-stage');
  await mkdir(join(stage, 'caps'), { recursive: true });
  await writeFile(join(stage, 'caps', 'netraw'), 'ping\n');
  await execa('setcap', ['cap_net_raw+ep', join(stage, 'caps', 'netraw')]);
  const capsTar = join(dir, 'caps.tar');
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--format=posix', '--numeric-owner', '--owner=0', '--group=0', '-cf', capsTar, '-C', stage, 'caps']);
  const deep = `deep/${'d'.repeat(60)}/${'e'.repeat(60)}/file`; // over 100 bytes: a ustar prefix
  const dockerfile = [
    `FROM ${BASE_IMAGE}`,
    'COPY files/ /data/',
    'ADD caps.tar /',
    `RUN mkdir -p /d/sub /opaque /${deep.slice(0, deep.lastIndexOf('/'))} && echo hi > /d/sub/f && ln -s /data/big /d/link && ln /d/sub/f /d/hard` +
      ` && touch /d/empty && echo old > /opaque/old && echo gone > /d/gone && echo deep > /${deep}` +
      ` && echo long > /d/${'l'.repeat(150)} && touch "$(printf '/d/bad\\377name')" "$(printf '/d/sep\\342\\200\\250')" '/d/q<b>&c"d\\e' /d/héllo`,
    'RUN rm /d/gone && rm -rf /opaque && mkdir /opaque && echo new > /opaque/new && echo changed > /d/sub/f',
  ].join('\n');
  const big = Buffer.alloc(200_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
  await dockerBuild(docker, 'ts/built:latest', dockerfile, { 'files/big': big, 'files/block': Buffer.alloc(BLOCK, 0x61), 'files/empty': '', 'files/small': 'small\n', 'caps.tar': await readFile(capsTar) });
}

/** A tree tarred by GNU tar in `format`: long names and link targets, a hardlink, odd names, 10 KiB records. */
async function gnuTar(dir: string, format: 'gnu' | 'ustar' | 'posix'): Promise<string> {
  const root = join(dir, `tree-${format}`);
  const long = format === 'ustar' ? `p/${'a'.repeat(90)}/${'b'.repeat(90)}` : `p/${'a'.repeat(120)}`;
  await mkdir(join(root, long), { recursive: true });
  await writeFile(join(root, long, 'f'), 'long\n');
  await writeFile(join(root, 'big'), Buffer.alloc(70_000, 0x42));
  await writeFile(join(root, 'empty'), '');
  await writeFile(join(root, 'quote"<&>'), 'q');
  await link(join(root, 'big'), join(root, 'big-link'));
  await symlink(format === 'ustar' ? 'big' : `${long}/f`, join(root, 'sym'));
  if (format !== 'ustar') await writeFile(Buffer.concat([Buffer.from(`${root}/bad`), Buffer.of(0xff), Buffer.from('name')]), 'x'); // not UTF-8
  await chmod(join(root, 'big'), 0o600);
  const file = join(dir, `gnu-${format}.tar`);
  await execa('tar', [`--format=${format}`, '--sort=name', '-cf', file, '-C', root, '.']);
  return file;
}

/** Bytes no tool here writes: a PAX global header, an x header, a legacy '\0' directory, a base-256 size, trailing bytes. */
function handMadeTar(): Buffer {
  const global = encodePaxRecord('comment', Buffer.from('made by hand'));
  const ext = encodePaxRecord('path', Buffer.from('x/with-a-pax-path'));
  const content = 'payload of the pax-named file\n';
  return Buffer.concat([
    rawHeader('pax_global_header', 'g', global.length),
    padded(global),
    rawHeader('legacy/', '\0', 0),
    rawHeader('x', '5', 0),
    rawHeader('PaxHeaders/x', 'x', ext.length),
    padded(ext),
    rawHeader('short-name', '0', content.length),
    padded(content),
    rawHeader('name', '0', 3, { prefix: 'prefixed/dir' }),
    padded('abc'),
    rawHeader('b256', '0', 5, { base256Size: true }),
    padded('12345'),
    END_OF_ARCHIVE,
    Buffer.from('bytes after the end of the archive\n'),
  ]);
}

/**
 * A hardlink whose header gives a size: no data follows, so Go's reader hashes nothing and
 * tar-split keeps the CRC of no bytes; Docker then cannot save the layer (it checks that CRC
 * against the linked file's content), with its own tar-split as with ours.
 */
function oddLinkTar(): Buffer {
  return Buffer.concat([rawHeader('target', '0', 5), padded('12345'), rawHeader('hard-with-size', '1', 7, { linkname: 'target' }), END_OF_ARCHIVE]);
}

type Layer = { diffId: string; chainId: string };

async function layersOf(docker: DockerEngine, image: string): Promise<Layer[]> {
  const { stdout } = await docker.cli(['image', 'inspect', '--format', '{{json .RootFS.Layers}}', image]);
  const diffIds = JSON.parse(stdout) as string[];
  const layers: Layer[] = [];
  for (const diffId of diffIds) {
    const parent = layers.at(-1)?.chainId;
    layers.push({ diffId, chainId: parent ? `sha256:${sha256(Buffer.from(`${parent} ${diffId}`))}` : diffId });
  }
  return layers;
}

/** The layer tars `docker save` gives (Docker puts them together from tar-split), by diff_id. */
async function savedLayers(docker: DockerEngine, image: string): Promise<Map<string, string>> {
  const dir = join(work.path, 'saved', image.replace(/[/:]/g, '_') + '-' + Date.now());
  await mkdir(dir, { recursive: true });
  await docker.cli(['save', '-o', join(dir, 'image.tar'), image]);
  await execa('tar', ['-xf', join(dir, 'image.tar'), '-C', dir]);
  const [manifest] = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as [{ Layers: string[] }];
  const byDiffId = new Map<string, string>();
  for (const path of manifest.Layers) byDiffId.set(`sha256:${sha256(await readFile(join(dir, path)))}`, join(dir, path));
  return byDiffId;
}

function dockerTarSplitPath(docker: DockerEngine, layer: Layer): string {
  return join(docker.dataRoot, 'image', 'overlay2', 'layerdb', 'sha256', layer.chainId.slice('sha256:'.length), 'tar-split.json.gz');
}

async function ourTarSplit(tarPath: string): Promise<Buffer> {
  const recorder = new TarSplitRecorder();
  await splitTar(createReadStream(tarPath), recorder, {}, tarPath);
  return recorder.finish();
}

/**
 * The document's lines with the segments after the end-of-archive blocks joined into one line:
 * tar-split records what trails the archive a segment per read, and where a read splits it
 * depends on the stream under Docker, so only the bytes must agree there.
 */
function withTailJoined(document: string): string[] {
  const lines = document.split('\n');
  const lastFile = lines.findLastIndex((line) => line.startsWith('{"type":1'));
  const tail = lines.slice(lastFile + 2).filter((line) => line !== '');
  const bytes = Buffer.concat(tail.map((line) => Buffer.from((JSON.parse(line) as { payload: string }).payload, 'base64')));
  return [...lines.slice(0, lastFile + 2), `tail ${bytes.toString('base64')}`];
}

/** The same document from the native extractor (imagebuilder/native/layer_extract.c), which also writes the files. */
async function nativeTarSplit(tarPath: string, n: number): Promise<Buffer> {
  const diffDir = join(work.path, `native-${n}`);
  await mkdir(diffDir);
  try {
    const extracted = await extractLayerNatively([createReadStream(tarPath)], { compression: 'none', diffDir, what: tarPath }, new AbortController().signal);
    return extracted.tarSplit;
  } finally {
    await rm(diffDir, { recursive: true, force: true });
  }
}

const ours = new Map<string, Buffer>(); // chain id -> our tar-split.json.gz

test('our tar-split.json.gz equals Docker 20.10\'s for every layer, line for line (byte for byte for docker build\'s layers)', { timeout: 300_000 }, async () => {
  assert.ok(engine);
  let compared = 0;
  let nativeCompared = 0;
  let fileEntries = 0;
  let rawNames = 0;
  const allLines: string[] = [];
  for (const image of images) {
    const saved = image.tar ? new Map([[`sha256:${sha256(await readFile(image.tar))}`, image.tar]]) : await savedLayers(engine, image.ref);
    for (const layer of await layersOf(engine, image.ref)) {
      const tarPath = saved.get(layer.diffId);
      assert.ok(tarPath, `${image.ref}: no layer tar with ${layer.diffId}`);
      const theirs = gunzipSync(await readFile(dockerTarSplitPath(engine, layer))).toString('utf8');
      const mine = await ourTarSplit(tarPath);
      const mineText = gunzipSync(mine).toString('utf8');
      const [theirLines, myLines] = [withTailJoined(theirs), withTailJoined(mineText)];
      for (let i = 0; i < Math.max(theirLines.length, myLines.length); i++) {
        assert.equal(myLines[i], theirLines[i], `${image.ref} layer ${layer.diffId}: line ${i}`);
      }
      // Byte for byte where nothing trails the archive (every layer docker build makes).
      if (!image.tar) assert.equal(mineText, theirs, `${image.ref} layer ${layer.diffId}: the whole document`);
      if (nativeExtraction('none')) {
        const nativeLines = withTailJoined(gunzipSync(await nativeTarSplit(tarPath, compared)).toString('utf8'));
        assert.deepEqual(nativeLines, theirLines, `${image.ref} layer ${layer.diffId}: the native extractor's document`);
        nativeCompared++;
      }
      fileEntries += theirLines.filter((line) => line.startsWith('{"type":1')).length;
      rawNames += theirLines.filter((line) => line.includes('"name_raw"')).length;
      allLines.push(...theirLines);
      ours.set(layer.chainId, mine);
      compared++;
    }
  }
  // The images hold what the comparison is meant to cover.
  assert.ok(compared >= images.length + 3, `compared ${compared} layers`);
  // CI builds the addon (ci/setup-machine.sh installs libdeflate-dev): there the native path is compared too.
  if (process.env.CI) assert.equal(nativeCompared, compared, 'the native extractor is built and compared');
  assert.ok(fileEntries > 50, `${fileEntries} file entries`);
  assert.ok(rawNames >= 3, `${rawNames} names that are not UTF-8`);
  for (const name of ['hard-with-size', 'pax_global_header', 'legacy/', 'x/with-a-pax-path', 'prefixed/dir/name', 'd/q\\u003cb\\u003e\\u0026c\\"d\\\\e', 'd/sep\\u2028', 'opaque/.wh..wh..opq', 'd/.wh.gone']) {
    assert.ok(allLines.some((line) => line.includes(`"name":"${name}"`)), `an entry named ${name}`);
  }
  const trailing = Buffer.from('bytes after the end of the archive\n').toString('base64');
  assert.ok(allLines.some((line) => line === `tail ${trailing}`), 'bytes after the end of the archive');
});

test('Docker takes our tar-split.json.gz: after a swap in the stopped engine, docker save gives every layer back by diff_id', { timeout: 300_000 }, async () => {
  assert.ok(engine && ours.size > 0, 'the comparison ran first');
  const root = engine.root;
  await engine.stop();
  engine = undefined;
  const layersByImage = new Map<string, Layer[]>();
  let differentBytes = 0;
  for (const [chainId, file] of ours) {
    const path = join(root, 'data', 'image', 'overlay2', 'layerdb', 'sha256', chainId.slice('sha256:'.length), 'tar-split.json.gz');
    if (!(await readFile(path)).equals(file)) differentBytes++;
    await rm(path);
    await writeFile(path, file);
  }
  // Same JSON, another gzip encoder (Go's): Docker really reads our bytes below.
  assert.ok(differentBytes > 0, 'our gzip bytes differ from Go\'s for some layer');
  engine = await DockerEngine.start({ root });
  for (const image of images) layersByImage.set(image.ref, await layersOf(engine, image.ref));
  for (const [image, layers] of layersByImage) {
    if (image === 'ts/odd-link:latest') {
      await assert.rejects(savedLayers(engine, image), /file integrity checksum failed for "hard-with-size"/, 'Docker cannot save it, with its own file or ours');
      continue;
    }
    const saved = await savedLayers(engine, image);
    for (const layer of layers) {
      assert.ok(saved.has(layer.diffId), `${image}: the layer ${layer.diffId} came back changed or not at all (got ${[...saved.keys()].join(', ')})`);
    }
  }
});
