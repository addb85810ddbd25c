import type { TarHeader } from './tar/entry.js';
import { ancestorsOf } from './tar/entry.js';
import type { EntryRef, Inode, MergeResult, MergedNode } from './merge.js';

/**
 * What pass 2 writes, and where: pure, from the merge. Directories (headers only) go first, in
 * path order, into every output layer that holds something below them; then every other entry
 * at the point where its bytes stream by in the input, so no content is ever buffered.
 */
export type EmitAction = { output: number; header: TarHeader };

export type SquashPlan = {
  outputs: number;
  /** Per output layer: directory headers, sorted by path, parents before children. */
  directories: TarHeader[][];
  /** Per input layer: entry ordinal -> what to write when that entry streams by (a file with its bytes, then its hardlinks). */
  actions: Array<Map<number, EmitAction[]>>;
  /** Per output layer: uncompressed content bytes, for balance reports. */
  outputBytes: number[];
  files: number;
};

/** One inode with every surviving name, or a directory with nothing below it: the unit of placement. */
type Unit = { names: string[]; inode?: Inode; directory?: MergedNode; weight: number; order: EntryRef };

const compareRefs = (a: EntryRef, b: EntryRef) => a.layer - b.layer || a.ordinal - b.ordinal;
const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function unitsOf(merge: MergeResult): Unit[] {
  const byInode = new Map<number, { inode: Inode; names: Array<{ path: string; from: EntryRef }> }>();
  const parents = new Set<string>();
  for (const node of merge.nodes.values()) {
    for (const ancestor of ancestorsOf(node.path)) parents.add(ancestor);
    if (node.kind !== 'leaf') continue;
    let group = byInode.get(node.inode.id);
    if (!group) byInode.set(node.inode.id, (group = { inode: node.inode, names: [] }));
    group.names.push({ path: node.path, from: node.from });
  }
  const units: Unit[] = [];
  for (const { inode, names } of byInode.values()) {
    // The inode's own name keeps the bytes when it survives; else the earliest surviving link takes them.
    const sourcePath = inode.source.header.path;
    names.sort((a, b) => (a.path === sourcePath ? -1 : b.path === sourcePath ? 1 : compareRefs(a.from, b.from) || byPath(a.path, b.path)));
    const size = inode.source.header.type === 'file' ? inode.source.header.size : 0;
    units.push({ names: names.map((n) => n.path), inode, weight: size + 512 * names.length, order: inode.source });
  }
  for (const node of merge.nodes.values()) {
    if (node.kind === 'directory' && !parents.has(node.path)) units.push({ names: [node.path], directory: node, weight: 512, order: node.from });
  }
  return units;
}

/** Largest first onto the lightest output: within a few percent of even for real images, and deterministic. */
function assign(units: Unit[], outputs: number): { bins: number[]; of: Map<Unit, number> } {
  const bins = new Array<number>(outputs).fill(0);
  const of = new Map<Unit, number>();
  const sorted = [...units].sort((a, b) => b.weight - a.weight || byPath(a.names[0]!, b.names[0]!));
  for (const unit of sorted) {
    let lightest = 0;
    for (let i = 1; i < outputs; i++) if (bins[i]! < bins[lightest]!) lightest = i;
    bins[lightest]! += unit.weight;
    of.set(unit, lightest);
  }
  return { bins, of };
}

export function planSquash(merge: MergeResult, inputLayers: number, options: { layers?: number } = {}): SquashPlan {
  const outputs = Math.max(1, options.layers ?? 1);
  const units = unitsOf(merge);
  const { of } = assign(units, outputs);
  const actions = Array.from({ length: inputLayers }, () => new Map<number, EmitAction[]>());
  const directorySets = Array.from({ length: outputs }, () => new Set<string>());
  const outputBytes = new Array<number>(outputs).fill(0);
  let files = 0;

  for (const unit of units) {
    const output = of.get(unit)!;
    for (const name of unit.names) for (const ancestor of ancestorsOf(name)) directorySets[output]!.add(ancestor);
    if (unit.directory) {
      directorySets[output]!.add(unit.directory.path);
      continue;
    }
    const inode = unit.inode!;
    const [first, ...links] = unit.names;
    const source = inode.source.header;
    const list: EmitAction[] = [{ output, header: { ...source, path: first! } }];
    for (const link of links) {
      list.push({ output, header: { ...source, path: link, type: 'hardlink', linkname: first!, size: 0 } });
    }
    if (source.type === 'file') {
      files++;
      outputBytes[output]! += source.size;
    }
    actions[inode.source.layer]!.set(inode.source.ordinal, list);
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
  return { outputs, directories, actions, outputBytes, files };
}
