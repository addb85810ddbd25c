import { NO_XATTRS, OPAQUE_MARKER, WHITEOUT_PREFIX, baseName, normaliseEntryPath, parentOf, type TarTime } from '../../imagebuilder/tar/entry.js';
import { BLOCK, encodeName, padding, parseNumeric, parsePaxTime, type PaxRecord } from '../../imagebuilder/tar/fields.js';
import { encodeHeader } from '../../imagebuilder/tar/writer.js';
import { splitTar, type SplitTarEntry } from './split-tar.js';
import type { TarSplitSink } from './tar-split.js';

/**
 * One pass over a layer's uncompressed tar (`splitTar`, which also feeds tar-split) that hands
 * the extractor (GNU tar, writing the layer's overlay2 diff dir) the bytes as they are, except
 * where Docker's overlay2 applier does something other than a plain extraction:
 *
 * - a whiteout `.wh.NAME` becomes the character device 0:0 NAME (owner of the whiteout, mode 0);
 * - an opaque marker becomes `trusted.overlay.opaque=y` on its directory;
 * - the root entry's metadata is not applied (the diff dir keeps its own);
 * - PAX global headers never reach it (Docker ignores them; GNU tar would apply them).
 *
 * It also finds the layer's size as the overlay2 driver counts it. What the direct path cannot
 * prove it writes exactly as Docker would (a path leaving the root, an entry below a symlink or
 * file the same layer made, a hardlink to something the layer did not make, a time before 1970,
 * which Docker moves to 1970) is an UnsupportedLayer: the caller leaves the image to the runtime.
 */

export class UnsupportedLayer extends Error {
  override name = 'UnsupportedLayer';
}

export type LayerFacts = {
  entries: number;
  /** What Docker's overlay2 reports as the layer's size: regular files (a hardlinked one once) and symlink targets, in bytes. */
  sizeOnDisk: number;
};

/** Where the walk sends the extractor's bytes; it waits while the promise is pending (backpressure). */
export type Forward = (chunk: Buffer) => Promise<void> | void;

type Meta = { mode: number; uid: number; gid: number; mtime: TarTime; xattrs: Map<string, Buffer> };

const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

export async function walkLayer(input: AsyncIterable<Buffer>, forward: Forward, tarSplit: TarSplitSink, what: string): Promise<LayerFacts> {
  const unsupported = (why: string) => new UnsupportedLayer(`${what}: ${why}`);
  // Paths this layer made as something other than a directory: nothing may be extracted below them.
  const nonDirs = new Set<string>();
  // Directories this layer made, with what an opaque marker must write back on them.
  const dirs = new Map<string, Meta>();
  // Sizes by path (a later entry of the same path replaces an earlier one); hardlinks add nothing.
  const sizes = new Map<string, number>();
  let owedPadding = 0;
  let passData = true;

  const entry = async (e: SplitTarEntry): Promise<void> => {
    if (owedPadding > 0) await forward(Buffer.alloc(owedPadding));
    owedPadding = 0;
    const path = normaliseEntryPath(e.name);
    if (path === undefined) throw unsupported(`entry "${e.name}" leaves the layer's root`);
    if (mtimeOf(e).sec < 0) throw unsupported(`entry "${e.name}" is dated before 1970`);
    for (let parent = parentOf(path); parent !== ''; parent = parentOf(parent)) {
      if (nonDirs.has(parent)) throw unsupported(`entry "${e.name}" lies below "${parent}", which the same layer made a non-directory`);
    }
    const base = baseName(path);
    const isDir = e.typeflag === '5';
    passData = true;
    if (path === '') {
      if (!isDir) throw unsupported('a root entry that is not a directory');
      passData = false;
      return;
    }
    if (base === OPAQUE_MARKER) {
      const dir = parentOf(path);
      if (dir === '') throw unsupported('an opaque marker at the root of the layer');
      // A directory the layer did not list was made by the applier: root's, 0755, made now.
      const known = dirs.get(dir) ?? { mode: 0o755, uid: 0, gid: 0, mtime: { sec: Math.floor(Date.now() / 1000), nsec: 0 }, xattrs: NO_XATTRS };
      await forward(encodeHeader({ path: dir, type: 'directory', size: 0, ...known, xattrs: new Map([...known.xattrs, ['trusted.overlay.opaque', Buffer.from('y')]]) }));
      passData = false;
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const hidden = `${parentOf(path) ? `${parentOf(path)}/` : ''}${base.slice(WHITEOUT_PREFIX.length)}`;
      const { uid, gid } = metaOf(e, what);
      await forward(encodeHeader({ path: hidden, type: 'char', mode: 0, uid, gid, size: 0, mtime: mtimeOf(e), devmajor: 0, devminor: 0, xattrs: NO_XATTRS }));
      nonDirs.add(hidden);
      sizes.delete(hidden);
      passData = false;
      return;
    }
    for (const bytes of e.extensions) await forward(bytes);
    await forward(e.header);
    owedPadding = padding(e.dataSize);
    if (isDir) {
      nonDirs.delete(path);
      dirs.set(path, metaOf(e, what));
      sizes.delete(path);
      return;
    }
    nonDirs.add(path);
    dirs.delete(path);
    if (e.typeflag === '1') {
      const target = normaliseEntryPath(e.linkname);
      if (target === undefined || target === '' || !nonDirs.has(target) || target === path) throw unsupported(`hardlink "${e.name}" to "${e.linkname}", which this layer did not make`);
      sizes.set(path, 0);
    } else if (e.typeflag === '2') sizes.set(path, encodeName(e.linkname).length);
    else if (e.typeflag === '0' || e.typeflag === '7') sizes.set(path, e.size);
    else sizes.set(path, 0);
  };

  const summary = await splitTar(input, tarSplit, { entry, data: (chunk) => (passData ? forward(chunk) : undefined) }, what);
  await forward(Buffer.concat([Buffer.alloc(owedPadding), END_OF_ARCHIVE]));
  return { entries: summary.entries, sizeOnDisk: [...sizes.values()].reduce((sum, size) => sum + size, 0) };
}

function paxValue(records: PaxRecord[], key: string): string | undefined {
  let value: string | undefined;
  for (const [k, v] of records) if (k === key) value = v.toString('latin1');
  return value;
}

function mtimeOf(e: SplitTarEntry): TarTime {
  const pax = paxValue(e.pax, 'mtime');
  return pax ? parsePaxTime(pax, e.name) : { sec: parseNumeric(e.header.subarray(136, 148), e.name), nsec: 0 };
}

function metaOf(e: SplitTarEntry, what: string): Meta {
  const id = (key: string, at: number) => {
    const pax = paxValue(e.pax, key);
    return pax ? Number(pax) : parseNumeric(e.header.subarray(at, at + 8), what);
  };
  let xattrs: Map<string, Buffer> | undefined;
  for (const [key, value] of e.pax) if (key.startsWith('SCHILY.xattr.')) (xattrs ??= new Map()).set(key.slice('SCHILY.xattr.'.length), value);
  return { mode: parseNumeric(e.header.subarray(100, 108), what) & 0o7777, uid: id('uid', 108), gid: id('gid', 116), mtime: mtimeOf(e), xattrs: xattrs ?? NO_XATTRS };
}
