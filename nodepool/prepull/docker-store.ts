import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, chmod, mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Docker Engine's own image store on disk (overlay2 graph driver, Docker 20.10's layout), written
 * while the engine is stopped, so that when it starts it finds the image as if it had pulled it:
 *
 *   overlay2/<cache-id>/diff          the layer's files (extracted by the caller)
 *   overlay2/<cache-id>/link, lower   its short link name; its parents' link names, nearest first
 *   overlay2/<cache-id>/work          overlayfs' work dir (layers with a parent)
 *   overlay2/<cache-id>/committed     in each layer that has a child
 *   overlay2/l/<link> -> ../<cache-id>/diff
 *   image/overlay2/layerdb/sha256/<chain-id>/{diff,size,cache-id,parent,tar-split.json.gz}
 *   image/overlay2/imagedb/content/sha256/<image-id>       the config, byte for byte
 *   image/overlay2/distribution/...   blob digest <-> diff_id, as a pull records for later pushes
 *   image/overlay2/repositories.json  name@digest -> image id (RepoDigests)
 *
 * Everything that names a layer is written only after all of the image's layers are whole, and
 * each piece appears by rename: an install that fails or is killed leaves at most cache dirs no
 * layer names, which `discard` removes (and which the engine ignores).
 */

export type NewLayer = { cacheId: string; dir: string; diffDir: string };

export type CommitLayer = {
  chainId: string;
  parentChainId?: string;
  diffId: string;
  blobDigest: string;
  /** Present for a layer this install extracted; absent for one the store already had. */
  extracted?: { cacheId: string; size: number; tarSplit: Buffer };
};

export type CommitImage = {
  /** The repository as Docker names it (`host[:port]/path`, `docker.io/library/x` for the Hub). */
  repository: string;
  /** The digest the image was pinned by (a manifest or an index): its RepoDigest. */
  pinnedDigest: string;
  imageId: string;
  config: Buffer;
  layers: CommitLayer[];
};

const hex = (digest: string) => digest.slice(digest.indexOf(':') + 1);

export class DockerImageStore {
  private readonly overlay: string;
  private readonly image: string;

  constructor(readonly dataRoot: string) {
    this.overlay = join(dataRoot, 'overlay2');
    this.image = join(dataRoot, 'image', 'overlay2');
  }

  /** The cache id of a layer the store already holds by chain id, if it does. */
  async existingLayer(chainId: string): Promise<string | undefined> {
    try {
      return (await readFile(join(this.image, 'layerdb', 'sha256', hex(chainId), 'cache-id'), 'utf8')).trim();
    } catch {
      return undefined;
    }
  }

  /** A fresh, empty cache dir for one layer's files; nothing names it yet. */
  async newLayer(): Promise<NewLayer> {
    await mkdir(this.overlay, { recursive: true, mode: 0o701 });
    const cacheId = randomBytes(32).toString('hex');
    const dir = join(this.overlay, cacheId);
    await mkdir(dir, { mode: 0o701 });
    const diffDir = join(dir, 'diff');
    await mkdir(diffDir, { mode: 0o755 });
    await chmod(diffDir, 0o755);
    return { cacheId, dir, diffDir };
  }

  /** Removes a cache dir nothing names (a failed or abandoned extraction), and its l/ link when it got one. */
  async discard(cacheId: string): Promise<void> {
    const dir = join(this.overlay, cacheId);
    const link = (await readFile(join(dir, 'link'), 'utf8').catch(() => '')).trim();
    if (/^[A-Z0-9]{26}$/.test(link)) await rm(join(this.overlay, 'l', link), { force: true });
    await rm(dir, { recursive: true, force: true });
  }

  /**
   * Names the extracted layers, then the image, in an order the engine can start from at any
   * point; when a step fails, the layer names it made are taken back before it throws, so the
   * caller can discard the cache dirs without leaving a name that points at nothing.
   */
  async commit(image: CommitImage): Promise<void> {
    const named: string[] = [];
    try {
      await this.commitNaming(image, named);
    } catch (err) {
      await Promise.allSettled(named.map((dir) => rm(dir, { recursive: true, force: true })));
      throw err;
    }
  }

  private async commitNaming(image: CommitImage, named: string[]): Promise<void> {
    await mkdir(join(this.overlay, 'l'), { recursive: true, mode: 0o701 });
    let parentCache: string | undefined;
    for (const layer of image.layers) {
      const cacheId = layer.extracted?.cacheId ?? (await this.existingLayer(layer.chainId));
      if (!cacheId) throw new Error(`image store: layer ${layer.chainId} is neither extracted nor present`);
      if (layer.extracted) await this.linkLayer(cacheId, parentCache);
      parentCache = cacheId;
    }
    const layerdb = join(this.image, 'layerdb');
    await mkdir(join(layerdb, 'sha256'), { recursive: true });
    await mkdir(join(layerdb, 'tmp'), { recursive: true });
    for (const layer of image.layers) {
      if (!layer.extracted) continue;
      const final = join(layerdb, 'sha256', hex(layer.chainId));
      if (await exists(final)) continue; // an earlier image of this install named it
      const temp = join(layerdb, 'tmp', `write-set-${randomBytes(8).toString('hex')}`);
      await mkdir(temp, { mode: 0o755 });
      named.push(temp);
      await writeFile(join(temp, 'diff'), layer.diffId);
      await writeFile(join(temp, 'size'), String(layer.extracted.size));
      await writeFile(join(temp, 'cache-id'), layer.extracted.cacheId);
      if (layer.parentChainId) await writeFile(join(temp, 'parent'), layer.parentChainId);
      await writeFile(join(temp, 'tar-split.json.gz'), layer.extracted.tarSplit);
      await rename(temp, final);
      named[named.length - 1] = final;
    }
    await this.recordDistribution(image);
    const content = join(this.image, 'imagedb', 'content', 'sha256');
    await mkdir(content, { recursive: true });
    await mkdir(join(this.image, 'imagedb', 'metadata', 'sha256'), { recursive: true });
    const config = join(content, hex(image.imageId));
    if (!(await exists(config))) {
      await atomicWrite(config, image.config, 0o600);
      named.push(config);
    }
    await this.addRepoDigest(image);
  }

  /** link, the l/ symlink, and for a layer with a parent: work, lower, and the parent's committed mark. */
  private async linkLayer(cacheId: string, parentCache: string | undefined): Promise<void> {
    const dir = join(this.overlay, cacheId);
    const link = linkName();
    await symlink(join('..', cacheId, 'diff'), join(this.overlay, 'l', link));
    await writeFile(join(dir, 'link'), link, { mode: 0o644 });
    if (!parentCache) return;
    const parentDir = join(this.overlay, parentCache);
    await mkdir(join(dir, 'work'), { mode: 0o700 });
    await writeFile(join(parentDir, 'committed'), '', { mode: 0o600 });
    const parentLink = (await readFile(join(parentDir, 'link'), 'utf8')).trim();
    const parentLower = await readFile(join(parentDir, 'lower'), 'utf8').catch(() => '');
    await writeFile(join(dir, 'lower'), parentLower ? `l/${parentLink}:${parentLower.trim()}` : `l/${parentLink}`, { mode: 0o644 });
  }

  /** What a pull records so that a later push of an image on these layers can mount or skip them. */
  private async recordDistribution(image: CommitImage): Promise<void> {
    const base = join(this.image, 'distribution');
    const byDigest = join(base, 'diffid-by-digest', 'sha256');
    const byDiff = join(base, 'v2metadata-by-diffid', 'sha256');
    await mkdir(byDigest, { recursive: true });
    await mkdir(byDiff, { recursive: true });
    for (const layer of image.layers) {
      await atomicWrite(join(byDigest, hex(layer.blobDigest)), Buffer.from(layer.diffId), 0o644);
      const file = join(byDiff, hex(layer.diffId));
      const known = JSON.parse(await readFile(file, 'utf8').catch(() => '[]')) as Array<{ Digest: string; SourceRepository: string; HMAC: string }>;
      if (known.some((entry) => entry.Digest === layer.blobDigest && entry.SourceRepository === image.repository)) continue;
      known.push({ Digest: layer.blobDigest, SourceRepository: image.repository, HMAC: '' });
      await atomicWrite(file, Buffer.from(JSON.stringify(known)), 0o644);
    }
  }

  private async addRepoDigest(image: CommitImage): Promise<void> {
    const file = join(this.image, 'repositories.json');
    const current = JSON.parse(await readFile(file, 'utf8').catch(() => '{"Repositories":{}}')) as { Repositories: Record<string, Record<string, string>> };
    current.Repositories ??= {};
    (current.Repositories[image.repository] ??= {})[`${image.repository}@${image.pinnedDigest}`] = image.imageId;
    await atomicWrite(file, Buffer.from(JSON.stringify(current)), 0o600);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

async function atomicWrite(path: string, data: Buffer, mode: number): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temp, data, { mode });
  await rename(temp, path);
}

/** A short name for l/, as the overlay2 driver makes them: 26 characters of base32 of random bytes (keeps mount options short). */
function linkName(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bytes = randomBytes(17);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < 26) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}
