import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { TarWriter } from '../imagebuilder/tar/writer.js';
import type { TarHeader } from '../imagebuilder/tar/entry.js';
import { fileSizes, seededBytes } from './image-generator.js';

/**
 * A build context for the squash benchmark: `layers` tarballs that a Dockerfile ADDs one per
 * step (fast: no container per step), then RUN steps that delete some of it and chmod / chown
 * other parts (copy-ups), so squashing has shadowed content to drop. Content is part text-like
 * (compressible, as sources and scripts are), part random (as binaries are); deterministic.
 */
export type SquashBenchImage = { layers: number; totalBytes: number; files: number };

/** Deterministic file content, about two thirds source-like text (compressible) and one third random (as binaries). */
export function sourceLikeContent(seed: string, size: number): Buffer {
  const random = seededBytes(seed, size);
  // About two thirds text: a line of "source" with varying numbers, then random bytes.
  const textBytes = Math.floor((size * 2) / 3);
  let text = '';
  for (let i = 0; text.length < textBytes; i++) text += `export const value${i % 97} = require('./module${(i * 31) % 1009}').map((x) => x * ${i % 13});\n`;
  Buffer.from(text).copy(random, 0, 0, textBytes);
  return random;
}

export async function writeSquashBenchContext(dir: string, image: SquashBenchImage, baseImage: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const layerBytes = Math.floor(image.totalBytes / image.layers);
  const filesPerLayer = Math.floor(image.files / image.layers);
  const lines = [`FROM ${baseImage}`];
  for (let layer = 0; layer < image.layers; layer++) {
    const writer = new TarWriter();
    const done = pipeline(writer.stream, createWriteStream(join(dir, `layer${layer}.tar`)));
    const mtime = { sec: 1_600_000_000 + layer, nsec: 0 };
    const dirHeader = (path: string): TarHeader => ({ path, type: 'directory', mode: 0o755, uid: 0, gid: 0, size: 0, mtime, xattrs: new Map() });
    await writer.add(dirHeader('data'));
    await writer.add(dirHeader(`data/l${layer}`));
    const sizes = fileSizes(layerBytes, filesPerLayer, layer + 1);
    const perDir = 100;
    for (const [i, size] of sizes.entries()) {
      if (i % perDir === 0) await writer.add(dirHeader(`data/l${layer}/d${i / perDir}`));
      await writer.add({ path: `data/l${layer}/d${Math.floor(i / perDir)}/f${i}`, type: 'file', mode: 0o644, uid: 0, gid: 0, size, mtime, xattrs: new Map() }, sourceLikeContent(`${layer}/${i}`, size));
    }
    await writer.finish();
    await done;
    lines.push(`ADD layer${layer}.tar /`);
  }
  // Shadowing: deletions, and metadata changes that copy whole files up into a new layer.
  lines.push('RUN rm -rf /data/l1 /data/l3/d0 /data/l5/d1');
  lines.push('RUN chmod -R go-r /data/l2/d0 /data/l4/d2');
  lines.push('RUN chown -R 1000:1000 /data/l6/d0');
  lines.push('RUN rm -rf /data/l2/d0/f1 /data/l7');
  await writeFile(join(dir, 'Dockerfile'), lines.join('\n') + '\n');
}
