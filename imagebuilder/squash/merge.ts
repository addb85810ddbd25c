import { BuildfleetError } from '../errors.js';
import { OPAQUE_MARKER, WHITEOUT_PREFIX, baseName, parentOf, type TarHeader } from '../tar/entry.js';

/**
 * The pure heart of the squash: from every layer's headers (pass 1), work out which entries
 * survive in the merged root filesystem, as a runtime applying the layers in order would see
 * it (OCI image-spec layer.md). No I/O here; pass 2 streams the contents the plan names.
 */

/** Where an entry sits in the input: layer index and position in that layer's tar. */
export type EntryRef = { layer: number; ordinal: number };

/** An entry of pass 1: its header and where it came from. */
export type IndexedEntry = EntryRef & { header: TarHeader };

/**
 * A leaf's `inode` is the entry that created it: hardlinked names share it, and its bytes and
 * metadata are the inode's, whatever names survive. The entry itself is the identity, so an inode
 * costs no object of its own.
 */
export type MergedNode =
  | { kind: 'directory'; path: string; header: TarHeader; from: EntryRef; implied?: boolean }
  | { kind: 'leaf'; path: string; inode: IndexedEntry; from: EntryRef };

export type MergeResult = {
  /** Every surviving path ("" is the root and is not included). */
  nodes: Map<string, MergedNode>;
  /** Bytes of file content in the input that the merged tree no longer shows. */
  shadowedBytes: number;
  inputEntries: number;
};

function isWhiteout(path: string): boolean {
  return baseName(path).startsWith(WHITEOUT_PREFIX);
}

/**
 * An entry below a symlink, file or device the same layer made. Docker applies a layer in its own
 * directory: it opens the path through that name (a symlink is followed inside the layer, and
 * fails unless its target is a directory the layer itself made; anything else is not a
 * directory), so `docker load` refuses such a layer. It is never turned into a directory here.
 * A lower layer's non-directory is different: the layer's own directory does not hold it, so
 * the runtime creates the parent (ensureParents), which Docker shows over the lower name
 * (test/squash-conformance/symlink-parent.test.ts).
 */
function throughNonDirectory(layer: number, path: string, parent: MergedNode): BuildfleetError {
  const what = parent.kind === 'leaf' ? parent.inode.header.type : 'directory';
  return new BuildfleetError('format', `layer ${layer + 1}: entry ${JSON.stringify(path)} lies below ${JSON.stringify(parent.path)}, which this layer made a ${what}: a runtime cannot extract it (docker load refuses it)`);
}

/** Removes `path` and everything below it. */
function removeSubtree(nodes: Map<string, MergedNode>, children: Map<string, Set<string>>, path: string): void {
  const kids = children.get(path);
  if (kids) {
    for (const kid of [...kids]) removeSubtree(nodes, children, kid);
    children.delete(path);
  }
  if (nodes.delete(path)) children.get(parentOf(path))?.delete(path);
}

/**
 * Applies layers bottom to top. Within a layer, whiteouts and opaque markers hide lower content
 * only (wherever they sit in the tar), so a layer's deletions are applied before its additions.
 */
export function mergeLayers(layers: IndexedEntry[][]): MergeResult {
  const nodes = new Map<string, MergedNode>();
  const children = new Map<string, Set<string>>();
  let inputEntries = 0;
  let inputFileBytes = 0;

  const attach = (node: MergedNode) => {
    nodes.set(node.path, node);
    const parent = parentOf(node.path);
    let set = children.get(parent);
    if (!set) children.set(parent, (set = new Set()));
    set.add(node.path);
  };

  /**
   * Parents a layer leaves out are created as the runtime creates them when it applies that
   * layer: a plain 0755 root directory in the layer, which hides a lower directory's metadata
   * (its children stay: directories merge). Docker 20.10 on overlay2 shows exactly that
   * (test/squash-conformance/implied-parent.test.ts). An entry of the layer for that directory, wherever it
   * comes in the tar, sets its metadata instead.
   */
  const ensureParents = (path: string, ref: EntryRef, mtime: TarHeader['mtime'], entry = path) => {
    const parent = parentOf(path);
    if (parent === '') return;
    const existing = nodes.get(parent);
    if (existing?.kind === 'directory' && existing.from.layer === ref.layer) return;
    if (existing && existing.from.layer === ref.layer) throw throughNonDirectory(ref.layer, entry, existing);
    ensureParents(parent, ref, mtime, entry);
    const implied: MergedNode = {
      kind: 'directory',
      path: parent,
      implied: true,
      from: ref,
      header: { path: parent, type: 'directory', mode: 0o755, uid: 0, gid: 0, size: 0, mtime, xattrs: new Map() },
    };
    if (existing?.kind === 'directory') {
      nodes.set(parent, implied);
      return;
    }
    if (existing) removeSubtree(nodes, children, parent);
    attach(implied);
  };

  for (const [layerIndex, entries] of layers.entries()) {
    inputEntries += entries.length;
    const seenInLayer = new Set<string>();
    // Deletions first: they act on lower layers only.
    for (const entry of entries) {
      const { path } = entry.header;
      if (!isWhiteout(path)) continue;
      const dir = parentOf(path);
      const name = baseName(path);
      if (name === OPAQUE_MARKER) {
        for (const kid of [...(children.get(dir) ?? [])]) removeSubtree(nodes, children, kid);
      } else {
        const hidden = (dir === '' ? '' : dir + '/') + name.slice(WHITEOUT_PREFIX.length);
        removeSubtree(nodes, children, hidden);
      }
    }
    // Hardlinks name an earlier entry of the same layer, or a path already in the tree.
    const inodesOfLayer = new Map<string, IndexedEntry>();
    for (const entry of entries) {
      const { header } = entry;
      if (isWhiteout(header.path)) {
        ensureParents(header.path, entry.layer === layerIndex ? entry : { layer: layerIndex, ordinal: entry.ordinal }, header.mtime);
        continue;
      }
      if (header.path === '') continue; // the root directory's own header: nothing to merge
      if (seenInLayer.has(header.path) && header.type !== 'directory') {
        // Duplicate paths in one layer: the later entry wins, as an extractor overwrites.
        removeSubtree(nodes, children, header.path);
      }
      seenInLayer.add(header.path);
      if (header.type === 'file') inputFileBytes += header.size;
      const existing = nodes.get(header.path);
      // The entry is its own ref (one object less per entry) unless a caller numbered it oddly.
      const ref: EntryRef = entry.layer === layerIndex ? entry : { layer: layerIndex, ordinal: entry.ordinal };
      ensureParents(header.path, ref, header.mtime);
      if (header.type === 'directory') {
        // A directory over a directory merges (lower children stay); over anything else replaces it.
        if (existing?.kind === 'directory') {
          nodes.set(header.path, { kind: 'directory', path: header.path, header, from: ref });
        } else {
          if (existing) removeSubtree(nodes, children, header.path);
          attach({ kind: 'directory', path: header.path, header, from: ref });
        }
        continue;
      }
      // Any other type replaces what was there, subtree included (a type change hides it).
      if (existing) removeSubtree(nodes, children, header.path);
      let inode: IndexedEntry;
      if (header.type === 'hardlink') {
        const target = header.linkname ?? '';
        const sameLayer = inodesOfLayer.get(target);
        const lower = nodes.get(target);
        if (sameLayer) inode = sameLayer;
        else if (lower?.kind === 'leaf') inode = lower.inode;
        else {
          throw new BuildfleetError('format', `layer ${layerIndex + 1}: hardlink ${header.path} -> ${target}: the target is not in this or any lower layer`);
        }
      } else {
        inode = entry;
      }
      inodesOfLayer.set(header.path, inode);
      attach({ kind: 'leaf', path: header.path, inode, from: ref });
    }
  }

  let survivingBytes = 0;
  // An inode counts once: at its own name when that still shows it, else at its first link seen
  // (a set only for those, which are rare).
  const countedLinks = new Set<IndexedEntry>();
  for (const node of nodes.values()) {
    if (node.kind !== 'leaf' || node.inode.header.type !== 'file') continue;
    const { inode } = node;
    const own = nodes.get(inode.header.path);
    if (own?.kind === 'leaf' && own.inode === inode) {
      if (own === node) survivingBytes += inode.header.size;
    } else if (!countedLinks.has(inode)) {
      countedLinks.add(inode);
      survivingBytes += inode.header.size;
    }
  }
  return { nodes, shadowedBytes: inputFileBytes - survivingBytes, inputEntries };
}
