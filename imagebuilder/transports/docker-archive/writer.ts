import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BuildfleetError } from '../../errors.js';
import { digestHex } from '../../oci/digest.js';
import { encodeTarHeader, tarEnd, tarPadding } from '../tar-index.js';

/**
 * Writing a docker-archive: the tar bytes `docker load` and our reader take, from a config file,
 * layer files and RepoTags. Shared by the docker-archive and docker-daemon destinations.
 */

export type DockerArchiveImage = {
  configPath: string;
  /** sha256 of the config file; computed when absent. */
  configDigest?: string;
  /** Layer files in order, stored in the archive as they are (plain tar or gzip). */
  layerPaths: string[];
  /** sha256 of each layer file; computed when absent. */
  layerDigests?: string[];
  /** e.g. ["x:1"]; empty for an untagged image. */
  repoTags: string[];
};

async function fileDigest(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * The bytes of a docker-archive, as a stream of chunks: `blobs/sha256/<hex>` members for the
 * config and the layers (each written once), `manifest.json` and `repositories`. Docker 20.10's
 * `docker load` and our reader both take it. Deterministic: fixed order, mtime 0, root owner.
 */
export async function* dockerArchiveChunks(image: DockerArchiveImage): AsyncGenerator<Buffer> {
  const configDigest = image.configDigest ?? (await fileDigest(image.configPath));
  const layerDigests = image.layerDigests ?? (await Promise.all(image.layerPaths.map(fileDigest)));
  if (layerDigests.length !== image.layerPaths.length) throw new Error('dockerArchiveChunks: one digest per layer path expected');
  const blobPath = (digest: string) => `blobs/sha256/${digestHex(digest)}`;

  yield encodeTarHeader({ name: 'blobs', size: 0, type: 'directory' });
  yield encodeTarHeader({ name: 'blobs/sha256', size: 0, type: 'directory' });
  const written = new Set<string>();
  const files: Array<[string, string]> = [[blobPath(configDigest), image.configPath]];
  for (const [i, path] of image.layerPaths.entries()) files.push([blobPath(layerDigests[i]!), path]);
  for (const [name, path] of files) {
    if (written.has(name)) continue;
    written.add(name);
    const { size } = await stat(path);
    yield encodeTarHeader({ name, size, type: 'file' });
    let seen = 0;
    for await (const chunk of createReadStream(path)) {
      const buf = chunk as Buffer;
      seen += buf.length;
      if (seen > size) break;
      yield buf;
    }
    if (seen !== size) throw new BuildfleetError('environment', `${path} changed size while being archived (${size} -> ${seen} bytes)`);
    yield tarPadding(size);
  }
  const manifest = [{ Config: blobPath(configDigest), RepoTags: image.repoTags, Layers: layerDigests.map(blobPath) }];
  const repositories: Record<string, Record<string, string>> = {};
  const top = layerDigests[layerDigests.length - 1];
  for (const repoTag of image.repoTags) {
    const colon = repoTag.lastIndexOf(':');
    const [name, tag] = colon > repoTag.lastIndexOf('/') ? [repoTag.slice(0, colon), repoTag.slice(colon + 1)] : [repoTag, 'latest'];
    if (top) (repositories[name] ??= {})[tag] = digestHex(top);
  }
  for (const [name, value] of [['manifest.json', manifest], ['repositories', repositories]] as const) {
    const bytes = Buffer.from(JSON.stringify(value) + '\n');
    yield encodeTarHeader({ name, size: bytes.length, type: 'file' });
    yield bytes;
    yield tarPadding(bytes.length);
  }
  yield tarEnd;
}

/** Writes a docker-archive into `out` (a file, or the body of `docker load`). */
export async function writeDockerArchive(out: Writable, image: DockerArchiveImage): Promise<void> {
  await pipeline(Readable.from(dockerArchiveChunks(image)), out);
}

/** The RepoTags a docker-archive or docker load should record for a reference. */
export function repoTagsFor(name: string | undefined, tag: string | undefined): string[] {
  return name ? [`${name}:${tag ?? 'latest'}`] : [];
}
