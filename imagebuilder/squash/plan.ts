import { BuildfleetError } from '../errors.js';
import { WHITEOUT_PREFIX, baseName, parentOf, type TarHeader } from '../tar/entry.js';
import type { EntryRef, MergeResult } from './merge.js';

/**
 * What pass 2 writes, and where: pure, from the merge. Directories (headers only) go first, in
 * path order, into every output layer that holds something below them; then every other entry
 * at the point where its bytes stream by in the input, so no content is ever buffered.
 */
/**
 * One entry to write, while planning: the inode's own header under `path`, or, with `linkTo`, a
 * hardlink to the name written just before. References, not copies: there are hundreds of thousands.
 */
type EmitAction = { output: number; source: TarHeader; path: string; linkTo?: string };

/**
 * What to write when one input entry streams by, while planning: a single action for an inode
 * with one name (nearly every file: no list object for each), else the name that takes the
 * bytes, then its links.
 */
type EmitGroup = EmitAction | EmitAction[];

const listOf = (group: EmitGroup): EmitAction[] => (Array.isArray(group) ? group : [group]);

/**
 * One name to write when an input entry streams by in pass 2: into `output`, under `path` (the
 * entry's own when absent), or, with `linkTo`, as a hardlink to the name written just before.
 */
export type EmitStep = { output: number; path?: string; linkTo?: string };

/** In `LayerWrites.outputs`: the entry's steps are in `special`. */
export const SPECIAL = -1;

/**
 * Pass 2's share of the plan for one input layer. `outputs[ordinal]` is the output the entry goes
 * to, plus one (0: not written, SPECIAL: see `special`), and ends after the last ordinal that
 * writes. `special` holds the few entries not written as they are read: under another name (a
 * hardlink whose target's name is gone takes the bytes) or several (a hardlink group).
 * A typed array, not an object per entry: a full garbage collection during pass 2 (V8 runs a
 * few, see withRoomToGrow in squash.ts) never has to walk it.
 */
export type LayerWrites = { outputs: Int32Array; special: Map<number, EmitStep[]> };

/** What to write when entry `ordinal` of a layer streams by (an empty list: nothing). */
export function stepsAt(writes: LayerWrites, ordinal: number): EmitStep[] {
  const code = writes.outputs[ordinal] ?? 0;
  return code === 0 ? [] : code === SPECIAL ? writes.special.get(ordinal)! : [{ output: code - 1 }];
}

/** The header a step writes for an entry read as `header` (`header` itself for the entry as it is). */
export function stepHeader(header: TarHeader, step: EmitStep | undefined): TarHeader {
  if (step === undefined || (step.path === undefined && step.linkTo === undefined)) return header;
  const path = step.path ?? header.path;
  return step.linkTo === undefined ? { ...header, path } : { ...header, path, type: 'hardlink', linkname: step.linkTo, size: 0 };
}

function layerWrites(layer: Array<EmitGroup | undefined>): LayerWrites {
  const outputs = new Int32Array(layer.length);
  const special = new Map<number, EmitStep[]>();
  layer.forEach((group, ordinal) => {
    if (group === undefined) return;
    if (!Array.isArray(group) && group.path === group.source.path) {
      outputs[ordinal] = group.output + 1;
      return;
    }
    outputs[ordinal] = SPECIAL;
    special.set(
      ordinal,
      listOf(group).map((action) => ({ output: action.output, path: action.path, ...(action.linkTo !== undefined && { linkTo: action.linkTo }) })),
    );
  });
  return { outputs, special };
}

export type SquashPlan = {
  outputs: number;
  /** First input layer squashed (0-based); the ones below are kept unchanged. */
  fromLayer: number;
  /** Per output layer: directory headers, sorted by path, parents before children. */
  directories: TarHeader[][];
  /** Per output layer: whiteouts that keep lower (unsquashed) content hidden; empty for a full squash. */
  whiteouts: TarHeader[][];
  /** Per input layer: what to write as its entries stream by (`outputs.length` 0: nothing). */
  writes: LayerWrites[];
  /** Per output layer: uncompressed content bytes, for balance reports. */
  outputBytes: number[];
  files: number;
};

const compareRefs = (a: EntryRef, b: EntryRef) => a.layer - b.layer || a.ordinal - b.ordinal;
const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Adds `path`'s ancestors to `set`. Every path in the set has its ancestors there too, so the
 * walk stops at the first one present: one parent lookup per entry instead of its whole depth.
 */
function addAncestors(set: Set<string>, path: string): void {
  for (let parent = parentOf(path); parent !== '' && !set.has(parent); parent = parentOf(parent)) set.add(parent);
}

/** A directory with nothing below it: placed on its own, as its ancestors come with any entry. */
type LoneDirectory = { path: string; output: number };

/** What a group or lone directory weighs in an output: its content bytes plus a header block per entry. */
function weightOf(item: EmitGroup | LoneDirectory): number {
  if ('path' in item && !('source' in item)) return 512;
  const first = Array.isArray(item) ? item[0]! : item;
  const names = Array.isArray(item) ? item.length : 1;
  return (first.source.type === 'file' ? first.source.size : 0) + 512 * names;
}

const nameOf = (item: EmitGroup | LoneDirectory) => (Array.isArray(item) ? item[0]!.path : item.path);

/**
 * The emit groups, straight into `actions` (no object per inode besides its action: an image
 * holds hundreds of thousands), and the directories that need placing on their own.
 */
function groupsOf(merge: MergeResult, fromLayer: number, actions: Array<Array<EmitGroup | undefined>>): LoneDirectory[] {
  const parents = new Set<string>();
  const linked: EmitAction[][] = [];
  for (const node of merge.nodes.values()) {
    // Below fromLayer everything stays in the kept layers.
    if (node.from.layer < fromLayer) continue;
    addAncestors(parents, node.path);
    if (node.kind !== 'leaf') continue;
    const { inode } = node;
    if (inode.layer < fromLayer) {
      throw new BuildfleetError(
        'unsupported',
        `--from-layer ${fromLayer + 1}: ${node.path} in layer ${node.from.layer + 1} is a hardlink to ${inode.header.path} in kept layer ${inode.layer + 1}; squash from a lower layer`,
      );
    }
    // The inode's slot is its source entry's: a second name turns its action into a list.
    const layer = actions[inode.layer]!;
    const existing = layer[inode.ordinal];
    const action: EmitAction = { output: 0, source: inode.header, path: node.path };
    if (existing === undefined) {
      // Filled up to the ordinal with undefined, so the array stays packed (holes would make it a dictionary).
      while (layer.length < inode.ordinal) layer.push(undefined);
      layer[inode.ordinal] = action;
    } else if (Array.isArray(existing)) existing.push(action);
    else linked.push((layer[inode.ordinal] = [existing, action]));
  }
  for (const list of linked) {
    const source = list[0]!.source;
    // The inode's own name keeps the bytes when it survives; else the earliest surviving link takes them.
    const from = (path: string) => merge.nodes.get(path)!.from;
    list.sort((a, b) => (a.path === source.path ? -1 : b.path === source.path ? 1 : compareRefs(from(a.path), from(b.path)) || byPath(a.path, b.path)));
    for (let i = 1; i < list.length; i++) list[i]!.linkTo = list[0]!.path;
  }
  const lone: LoneDirectory[] = [];
  for (const node of merge.nodes.values()) {
    if (node.kind === 'directory' && node.from.layer >= fromLayer && !parents.has(node.path)) lone.push({ path: node.path, output: 0 });
  }
  return lone;
}

/** Largest first onto the lightest output: within a few percent of even for real images, and deterministic. */
function assign(actions: Array<Array<EmitGroup | undefined>>, lone: LoneDirectory[], outputs: number): void {
  if (outputs === 1) return; // everything is already in output 0
  const items: Array<EmitGroup | LoneDirectory> = [...lone];
  for (const layer of actions) for (const group of layer) if (group) items.push(group);
  const weights = new Map(items.map((item) => [item, weightOf(item)]));
  // Names are unique across items, so the order is total whatever the input order.
  items.sort((a, b) => weights.get(b)! - weights.get(a)! || byPath(nameOf(a), nameOf(b)));
  const bins = new Array<number>(outputs).fill(0);
  for (const item of items) {
    let lightest = 0;
    for (let i = 1; i < outputs; i++) if (bins[i]! < bins[lightest]!) lightest = i;
    bins[lightest]! += weights.get(item)!;
    if (Array.isArray(item)) for (const action of item) action.output = lightest;
    else item.output = lightest;
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
  const actions = Array.from({ length: inputLayers }, (): Array<EmitGroup | undefined> => []);
  const lone = groupsOf(merge, fromLayer, actions);
  assign(actions, lone, outputs);
  const directorySets = Array.from({ length: outputs }, () => new Set<string>());
  const outputBytes = new Array<number>(outputs).fill(0);
  let files = 0;
  for (const directory of lone) {
    addAncestors(directorySets[directory.output]!, directory.path);
    directorySets[directory.output]!.add(directory.path);
  }
  for (const layer of actions) {
    for (const group of layer) {
      if (!group) continue;
      const first = Array.isArray(group) ? group[0]! : group;
      addAncestors(directorySets[first.output]!, first.path);
      if (Array.isArray(group)) for (const link of group) addAncestors(directorySets[link.output]!, link.path);
      if (first.source.type === 'file') {
        files++;
        outputBytes[first.output]! += first.source.size;
      }
    }
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
  return { outputs, fromLayer, directories, whiteouts, writes: actions.map(layerWrites), outputBytes, files };
}
