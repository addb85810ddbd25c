import { BuildfleetError } from '../oci/errors.js';
import { WHITEOUT_PREFIX, baseName, parentOf, type TarHeader } from '../tar/entry.js';
import type { EntryRef, Inode, MergeResult, MergedNode } from './merge.js';

/**
 * What pass 2 writes, and where: pure, from the merge. Directories (headers only) go first, in
 * path order, into every output layer that holds something below them; then every other entry
 * at the point where its bytes stream by in the input, so no content is ever buffered.
 */
/**
 * One entry to write: the inode's own header under `path`, or, with `linkTo`, a hardlink to the
 * name written just before. References, not copies: a plan for 200k files must stay small.
 */
export type EmitAction = { output: number; source: TarHeader; path: string; linkTo?: string };

/** The header an action writes. */
export function headerOf(action: EmitAction): TarHeader {
  return action.linkTo === undefined
    ? { ...action.source, path: action.path }
    : { ...action.source, path: action.path, type: 'hardlink', linkname: action.linkTo, size: 0 };
}

export type SquashPlan = {
  outputs: number;
  /** First input layer squashed (0-based); the ones below are kept unchanged. */
  fromLayer: number;
  /** Per output layer: directory headers, sorted by path, parents before children. */
  directories: TarHeader[][];
  /** Per output layer: whiteouts that keep lower (unsquashed) content hidden; empty for a full squash. */
  whiteouts: TarHeader[][];
  /** Per input layer: entry ordinal -> what to write when that entry streams by (a file with its bytes, then its hardlinks). */
  actions: Array<Map<number, EmitAction[]>>;
  /** Per output layer: uncompressed content bytes, for balance reports. */
  outputBytes: number[];
  files: number;
};

/** One inode with every surviving name, or a directory with nothing below it: the unit of placement. */
type Unit = { names: string[]; inode?: Inode; directory?: MergedNode; weight: number; output: number };

const compareRefs = (a: EntryRef, b: EntryRef) => a.layer - b.layer || a.ordinal - b.ordinal;
const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Adds `path`'s ancestors to `set`. Every path in the set has its ancestors there too, so the
 * walk stops at the first one present: one parent lookup per entry instead of its whole depth.
 */
function addAncestors(set: Set<string>, path: string): void {
  for (let parent = parentOf(path); parent !== '' && !set.has(parent); parent = parentOf(parent)) set.add(parent);
}

function unitsOf(merge: MergeResult, fromLayer: number): Unit[] {
  // Per inode, its surviving names; one object per inode, as an image holds hundreds of thousands.
  const byInode = new Map<number, Unit>();
  const parents = new Set<string>();
  for (const node of merge.nodes.values()) {
    // Below fromLayer everything stays in the kept layers.
    if (node.from.layer < fromLayer) continue;
    addAncestors(parents, node.path);
    if (node.kind !== 'leaf') continue;
    if (node.inode.source.layer < fromLayer) {
      throw new BuildfleetError(
        'unsupported',
        `--from-layer ${fromLayer + 1}: ${node.path} in layer ${node.from.layer + 1} is a hardlink to ${node.inode.source.header.path} in kept layer ${node.inode.source.layer + 1}; squash from a lower layer`,
      );
    }
    const unit = byInode.get(node.inode.id);
    if (unit) unit.names.push(node.path);
    else byInode.set(node.inode.id, { names: [node.path], inode: node.inode, weight: 0, output: 0 });
  }
  const units: Unit[] = [];
  for (const unit of byInode.values()) {
    const { inode, names } = unit;
    const source = inode!.source.header;
    if (names.length > 1) {
      // The inode's own name keeps the bytes when it survives; else the earliest surviving link takes them.
      const from = (path: string) => merge.nodes.get(path)!.from;
      names.sort((a, b) => (a === source.path ? -1 : b === source.path ? 1 : compareRefs(from(a), from(b)) || byPath(a, b)));
    }
    unit.weight = (source.type === 'file' ? source.size : 0) + 512 * names.length;
    units.push(unit);
  }
  for (const node of merge.nodes.values()) {
    if (node.kind === 'directory' && node.from.layer >= fromLayer && !parents.has(node.path)) units.push({ names: [node.path], directory: node, weight: 512, output: 0 });
  }
  return units;
}

/** Largest first onto the lightest output: within a few percent of even for real images, and deterministic. */
function assign(units: Unit[], outputs: number): void {
  if (outputs === 1) return; // every unit is already in output 0
  const bins = new Array<number>(outputs).fill(0);
  const sorted = [...units].sort((a, b) => b.weight - a.weight || byPath(a.names[0]!, b.names[0]!));
  for (const unit of sorted) {
    let lightest = 0;
    for (let i = 1; i < outputs; i++) if (bins[i]! < bins[lightest]!) lightest = i;
    bins[lightest]! += unit.weight;
    unit.output = lightest;
  }
}

/**
 * Whiteouts for a partial squash: every path the kept layers show that the merged tree does not,
 * topmost only (a hidden directory's whiteout covers its subtree), and only where the merged
 * parent is a directory (a file or symlink put in a directory's place hides it by itself).
 */
export function whiteoutsFor(lower: MergeResult, merged: MergeResult): TarHeader[] {
  const out: TarHeader[] = [];
  for (const path of lower.nodes.keys()) {
    if (merged.nodes.has(path)) continue;
    const parent = parentOf(path);
    if (parent !== '' && (!lower.nodes.has(parent) || !merged.nodes.has(parent))) continue; // covered higher up
    if (parent !== '' && merged.nodes.get(parent)?.kind !== 'directory') continue;
    const name = `${parent === '' ? '' : parent + '/'}${WHITEOUT_PREFIX}${baseName(path)}`;
    out.push({ path: name, type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() });
  }
  return out.sort((a, b) => byPath(a.path, b.path));
}

export type PlanOptions = {
  /** K output layers. */
  layers?: number;
  /** Squash only input layers fromLayer.. (0-based); `lower` is the merge of the layers below it. */
  fromLayer?: number;
  lower?: MergeResult;
};

export function planSquash(merge: MergeResult, inputLayers: number, options: PlanOptions = {}): SquashPlan {
  const outputs = Math.max(1, options.layers ?? 1);
  const fromLayer = options.fromLayer ?? 0;
  const units = unitsOf(merge, fromLayer);
  assign(units, outputs);
  const actions = Array.from({ length: inputLayers }, () => new Map<number, EmitAction[]>());
  const directorySets = Array.from({ length: outputs }, () => new Set<string>());
  const outputBytes = new Array<number>(outputs).fill(0);
  let files = 0;

  for (const unit of units) {
    const { output } = unit;
    for (const name of unit.names) addAncestors(directorySets[output]!, name);
    if (unit.directory) {
      directorySets[output]!.add(unit.directory.path);
      continue;
    }
    const inode = unit.inode!;
    const first = unit.names[0]!;
    const source = inode.source.header;
    const list: EmitAction[] = [{ output, source, path: first }];
    for (let i = 1; i < unit.names.length; i++) list.push({ output, source, path: unit.names[i]!, linkTo: first });
    if (source.type === 'file') {
      files++;
      outputBytes[output]! += source.size;
    }
    actions[inode.source.layer]!.set(inode.source.ordinal, list);
  }

  // Whiteouts go into the lowest output layer: a whiteout hides only what lies below its layer.
  const whiteouts = Array.from({ length: outputs }, (): TarHeader[] => []);
  if (fromLayer > 0 && options.lower) {
    whiteouts[0] = whiteoutsFor(options.lower, merge);
    for (const whiteout of whiteouts[0]) addAncestors(directorySets[0]!, whiteout.path);
  }

  const directories = directorySets.map((set) =>
    [...set]
      .sort(byPath)
      .map((path) => {
        const node = merge.nodes.get(path);
        if (node?.kind !== 'directory') throw new Error(`squash plan: ${path} is an ancestor but not a directory in the merged tree`);
        return { ...node.header, path };
      }),
  );
  return { outputs, fromLayer, directories, whiteouts, actions, outputBytes, files };
}
