import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { VerifyingStream } from '../../oci/digest.js';
import { BuildfleetError } from '../../errors.js';
import { formatReference, type OciLayoutReference } from '../../oci/reference.js';
import { Descriptor, ImageConfig, Index, parseAnyManifest, parseJson } from '../../oci/schemas.js';
import { selectPlatform } from '../../oci/platform.js';
import type { ImageSource, OpenBlobOptions, ResolveOptions, ResolvedImage } from '../types.js';
import {
  INDEX_FILE,
  LAYOUT_FILE,
  blobPathIn,
  checkLayoutFile,
  errnoCode,
  fsError,
  readIndexJson,
  readVerifiedBlob,
  refName,
  shortDigest,
  statOrUndefined,
} from './layout-files.js';

/** Reading an image from an OCI layout: the index.json entry the tag names, then verified blobs. */

const MAX_NESTING = 4;

function describeEntries(index: Index): string {
  const names = index.manifests.map((entry) => refName(entry) ?? `untagged ${shortDigest(entry.digest)}`);
  return names.length > 0 ? names.join(', ') : 'none';
}

class OciLayoutSource implements ImageSource {
  readonly reference: OciLayoutReference;
  private readonly root: string;
  private readonly label: string;

  constructor(ref: OciLayoutReference) {
    this.reference = ref;
    this.root = ref.path;
    this.label = formatReference(ref);
  }

  async check(): Promise<void> {
    const info = await statOrUndefined(this.root);
    if (!info) throw new BuildfleetError('not-found', `${this.label}: no such directory ${this.root}`);
    if (!info.isDirectory()) throw new BuildfleetError('format', `${this.label}: ${this.root} is not a directory`);
    if ((await checkLayoutFile(this.root, this.label)) === 'absent') {
      throw new BuildfleetError('format', `${this.label}: ${this.root} is not an OCI image layout (no ${LAYOUT_FILE} file)`);
    }
  }

  /** The index.json entry the reference names. */
  private pickEntry(index: Index, options: ResolveOptions): Descriptor {
    const { tag } = this.reference;
    if (tag === undefined) {
      const only = index.manifests[0];
      if (index.manifests.length === 1 && only) return only;
      if (index.manifests.length === 0) throw new BuildfleetError('not-found', `${this.label}: the layout holds no image`);
      throw new BuildfleetError(
        'usage',
        `${this.label}: the layout holds ${index.manifests.length} images (${describeEntries(index)}); name one as oci:${this.root}:TAG`,
      );
    }
    const matching = index.manifests.filter((entry) => refName(entry) === tag);
    const first = matching[0];
    if (!first) {
      throw new BuildfleetError('not-found', `${this.label}: no image tagged "${tag}" in the layout (it has: ${describeEntries(index)})`);
    }
    if (matching.length === 1) return first;
    // Some tools tag one entry per platform; choose among them like in an index.
    if (matching.every((entry) => entry.platform)) {
      return selectPlatform({ schemaVersion: 2, manifests: matching }, options.platform, `${this.label}`);
    }
    throw new BuildfleetError('format', `${this.label}: ${matching.length} entries of index.json are tagged "${tag}"`);
  }

  async resolve(options: ResolveOptions = {}): Promise<ResolvedImage> {
    const read = await readIndexJson(this.root, this.label);
    if (!read) throw new BuildfleetError('format', `${this.label}: ${this.root} is not an OCI image layout (no ${INDEX_FILE})`);
    let descriptor = this.pickEntry(read.index, options);
    let parent: ResolvedImage['index'];
    for (let depth = 0; ; depth++) {
      const what = `${this.label}: manifest ${shortDigest(descriptor.digest)}`;
      const bytes = await readVerifiedBlob(this.root, descriptor, what);
      const parsed = parseAnyManifest(bytes, descriptor.mediaType, what);
      if (parsed.kind === 'index') {
        if (depth >= MAX_NESTING) throw new BuildfleetError('format', `${what}: image indexes nested more than ${MAX_NESTING} deep`);
        const chosen = selectPlatform(parsed.index, options.platform, `${this.label}: image index ${shortDigest(descriptor.digest)}`);
        parent = { index: parsed.index, bytes, digest: descriptor.digest, mediaType: parsed.index.mediaType ?? descriptor.mediaType };
        descriptor = chosen;
        continue;
      }
      const { manifest } = parsed;
      const configWhat = `${this.label}: config ${shortDigest(manifest.config.digest)}`;
      const configBytes = await readVerifiedBlob(this.root, manifest.config, configWhat);
      const config = parseJson(ImageConfig, configBytes, configWhat);
      await this.checkLayersPresent(manifest.layers, what);
      return {
        manifest,
        manifestBytes: bytes,
        manifestDigest: descriptor.digest,
        manifestMediaType: manifest.mediaType ?? descriptor.mediaType,
        config,
        configBytes,
        ...(parent && { index: parent }),
      };
    }
  }

  /**
   * Layers are read only when copied, so without this an inspect of a layout that lost a layer
   * blob would show the image as if whole. A stat per layer; the digests are checked on read.
   */
  private async checkLayersPresent(layers: Descriptor[], what: string): Promise<void> {
    const problems: string[] = [];
    for (const [i, layer] of layers.entries()) {
      const info = await statOrUndefined(blobPathIn(this.root, layer.digest));
      const which = `layer ${i + 1} of ${layers.length} (blob ${layer.digest})`;
      if (!info) problems.push(`${which} is missing`);
      else if (info.size !== layer.size) problems.push(`${which} has ${info.size} bytes, its descriptor declares ${layer.size}`);
    }
    if (problems.length > 0) throw new BuildfleetError('integrity', `${what}: the layout is incomplete: ${problems.join('; ')}`);
  }

  async openBlob(descriptor: Descriptor, options: OpenBlobOptions = {}): Promise<Readable> {
    const what = `${this.label}: blob ${shortDigest(descriptor.digest)}`;
    const path = blobPathIn(this.root, descriptor.digest);
    let handle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new BuildfleetError('integrity', `${what} is missing from the layout (the layout is incomplete)`);
      throw fsError(err, what);
    }
    const input = handle.createReadStream();
    const verifier = new VerifyingStream(descriptor.digest, descriptor.size, what, { hash: options.verify !== false });
    input.on('error', (err) => verifier.destroy(fsError(err, what)));
    verifier.on('close', () => input.destroy());
    input.pipe(verifier);
    return verifier;
  }

  async close(): Promise<void> {
    // Nothing held between calls.
  }
}

export async function openOciLayoutSource(ref: OciLayoutReference): Promise<ImageSource> {
  const source = new OciLayoutSource(ref);
  await source.check();
  return source;
}
