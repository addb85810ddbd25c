import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BuildfleetError, exitCodeFor } from '../errors.js';
import type { TarEntryType, TarHeader } from '../tar/entry.js';
import { mergeLayers, type IndexedEntry, type MergeResult } from './merge.js';
import { planSquash, stepHeader, stepsAt, type SquashPlan } from './plan.js';

type Spec = string | [string, TarEntryType | 'wh', Partial<TarHeader>?];

/** Layers as short specs: "d:path" dir, "f:path:size" file, ["path", type, fields]. */
function layers(...specs: Spec[][]): IndexedEntry[][] {
  return specs.map((entries, layer) =>
    entries.map((spec, ordinal) => {
      let header: TarHeader;
      if (typeof spec === 'string') {
        const [kind, path, size] = spec.split(':') as [string, string, string?];
        const type: TarEntryType = kind === 'd' ? 'directory' : 'file';
        header = { path, type, mode: type === 'directory' ? 0o755 : 0o644, uid: 0, gid: 0, size: Number(size ?? 0), mtime: { sec: layer, nsec: 0 }, xattrs: new Map() };
      } else {
        const [path, type, fields] = spec;
        header = { path, type: type === 'wh' ? 'file' : type, mode: 0o644, uid: 0, gid: 0, size: 0, mtime: { sec: layer, nsec: 0 }, xattrs: new Map(), ...fields };
      }
      return { layer, ordinal, header };
    }),
  );
}

/** What pass 2 writes when entry `ordinal` of `layer` streams by: each name's header and output. */
function written(plan: SquashPlan, input: IndexedEntry[][], layer: number, ordinal: number): Array<TarHeader & { output: number }> {
  return stepsAt(plan.writes[layer]!, ordinal).map((step) => ({ ...stepHeader(input[layer]![ordinal]!.header, step), output: step.output }));
}

/** Every header pass 2 writes for a layer, in tar order. */
function writtenIn(plan: SquashPlan, input: IndexedEntry[][], layer: number): Array<TarHeader & { output: number }> {
  return input[layer]!.flatMap((_, ordinal) => written(plan, input, layer, ordinal));
}

/** The merged tree as "path type [-> inode source path]" lines, sorted. */
function tree(result: MergeResult): string[] {
  return [...result.nodes.values()]
    .map((node) => (node.kind === 'directory' ? `${node.path}/` : `${node.path} ${node.inode.header.type}@${node.inode.layer}:${node.inode.header.path}`))
    .sort();
}

test('a whiteout hides the lower path and its subtree, not the same layer', () => {
  const result = mergeLayers(layers(['d:a', 'f:a/x:10', 'd:a/sub', 'f:a/sub/y:5', 'f:keep:1'], ['f:a/new:3', ['.wh.a', 'wh']], []));
  // The whiteout in layer 1 hides layer 0's a/; layer 1's own a/new stays (and implies a/).
  assert.deepEqual(tree(result), ['a/', 'a/new file@1:a/new', 'keep file@0:keep']);
  assert.equal(result.shadowedBytes, 15);
});

test('an opaque marker hides lower contents wherever it sits in the tar', () => {
  const result = mergeLayers(layers(['d:dir', 'f:dir/old:7'], ['d:dir', 'f:dir/new:2', ['dir/.wh..wh..opq', 'wh']]));
  assert.deepEqual(tree(result), ['dir/', 'dir/new file@1:dir/new']);
});

test('delete then recreate across three layers', () => {
  const result = mergeLayers(layers(['f:x:1'], [['.wh.x', 'wh']], ['f:x:2']));
  assert.deepEqual(tree(result), ['x file@2:x']);
});

test('a path replaced by another type hides the old subtree without a whiteout', () => {
  const toFile = mergeLayers(layers(['d:p', 'f:p/child:4'], ['f:p:1']));
  assert.deepEqual(tree(toFile), ['p file@1:p']);
  const toLink = mergeLayers(layers(['d:p', 'f:p/child:4'], [['p', 'symlink', { linkname: '/elsewhere' }]]));
  assert.deepEqual(tree(toLink), ['p symlink@1:p']);
  const fileToDir = mergeLayers(layers(['f:q:3'], ['d:q', 'f:q/in:1']));
  assert.deepEqual(tree(fileToDir), ['q/', 'q/in file@1:q/in']);
});

test('a directory over a directory keeps lower children and takes the new metadata', () => {
  const result = mergeLayers(layers(['d:etc', 'f:etc/a:1'], [['etc', 'directory', { mode: 0o700 }], 'f:etc/b:1']));
  assert.deepEqual(tree(result), ['etc/', 'etc/a file@0:etc/a', 'etc/b file@1:etc/b']);
  const etc = result.nodes.get('etc');
  assert.equal(etc?.kind === 'directory' && etc.header.mode, 0o700);
});

test('hardlink target deleted later: the link keeps the bytes and becomes the file', () => {
  const input = layers(['f:orig:100', ['link', 'hardlink', { linkname: 'orig' }]], [['.wh.orig', 'wh']]);
  const merged = mergeLayers(input);
  assert.deepEqual(tree(merged), ['link file@0:orig']);
  const plan = planSquash(merged, 2);
  assert.deepEqual(written(plan, input, 0, 0).map((h) => [h.path, h.type, h.size]), [['link', 'file', 100]]);
  assert.deepEqual(written(plan, input, 0, 1), [], 'the link entry itself writes nothing');
});

test('hardlink target overwritten later: the link keeps the original bytes', () => {
  const input = layers(['f:orig:100', ['link', 'hardlink', { linkname: 'orig' }]], ['f:orig:5']);
  const merged = mergeLayers(input);
  assert.deepEqual(tree(merged), ['link file@0:orig', 'orig file@1:orig']);
  const plan = planSquash(merged, 2);
  assert.deepEqual(written(plan, input, 0, 0).map((h) => [h.path, h.type, h.size]), [['link', 'file', 100]]);
  assert.deepEqual(written(plan, input, 1, 0).map((h) => [h.path, h.type, h.size]), [['orig', 'file', 5]]);
});

test('a copy-up (chmod) splits one name off a hardlink group; the others stay linked', () => {
  const input = layers(['f:a:10', ['b', 'hardlink', { linkname: 'a' }], ['c', 'hardlink', { linkname: 'a' }]], [['b', 'file', { size: 10, mode: 0o600 }]]);
  const plan = planSquash(mergeLayers(input), 2);
  assert.deepEqual(written(plan, input, 0, 0).map((h) => [h.path, h.type, h.linkname, h.size]), [['a', 'file', undefined, 10], ['c', 'hardlink', 'a', 0]]);
  assert.deepEqual(written(plan, input, 1, 0).map((h) => [h.path, h.mode]), [['b', 0o600]]);
});

test('a later layer may hardlink to a lower file', () => {
  const input = layers(['f:lib.so:50'], [['lib.so.1', 'hardlink', { linkname: 'lib.so' }]]);
  const plan = planSquash(mergeLayers(input), 2);
  assert.deepEqual(written(plan, input, 0, 0).map((h) => [h.path, h.type]), [['lib.so', 'file'], ['lib.so.1', 'hardlink']]);
  assert.deepEqual(written(plan, input, 1, 0), []);
});

test('a hardlink to a path in no layer is an error', () => {
  assert.throws(() => mergeLayers(layers([['dangling', 'hardlink', { linkname: 'nowhere' }]])), /hardlink dangling -> nowhere: the target is not in this or any lower layer/);
});

test('symlinks to deleted targets survive; names containing .wh. are plain names', () => {
  const merged = mergeLayers(layers(['f:target:1', ['ln', 'symlink', { linkname: 'target' }], 'f:a.wh.b:2'], [['.wh.target', 'wh']]));
  assert.deepEqual(tree(merged), ['a.wh.b file@0:a.wh.b', 'ln symlink@0:ln']);
});

test('missing parent directories are implied as the runtime would create them', () => {
  const merged = mergeLayers(layers(['f:deep/er/file:1']));
  const plan = planSquash(merged, 1);
  assert.deepEqual(plan.directories[0]!.map((h) => [h.path, h.mode]), [['deep', 0o755], ['deep/er', 0o755]]);
});

test('an image of directories only: every ancestor of an empty directory is written, with its newest metadata', () => {
  const merged = mergeLayers(layers(['d:empty', 'd:empty/nested', 'd:empty/nested/leaf', 'd:empty/plain'], [['empty', 'directory', { mode: 0o700 }], 'd:empty/later']));
  for (const outputs of [1, 2]) {
    const plan = planSquash(merged, 2, { layers: outputs });
    const written = plan.directories.flat().map((h) => `${h.path}@${h.mtime.sec}`);
    assert.deepEqual(new Set(written), new Set(['empty@1', 'empty/later@1', 'empty/nested@0', 'empty/nested/leaf@0', 'empty/plain@0']));
    for (const dirs of plan.directories) for (const h of dirs) if (h.path !== 'empty') assert.ok(dirs.some((d) => d.path === 'empty'), `${h.path}'s parent in its output`);
  }
});

test('duplicate paths in one layer: the later entry wins', () => {
  const merged = mergeLayers(layers(['f:x:1', 'f:x:9']));
  assert.deepEqual([...merged.nodes.values()].map((n) => n.kind === 'leaf' && n.inode.header.size), [9]);
  assert.equal(merged.shadowedBytes, 1);
});

test('K balanced layers: disjoint leaves, every output carries its ancestors, hardlink groups together', () => {
  const spec: Spec[] = ['d:usr', 'd:usr/lib', 'd:empty'];
  for (let i = 0; i < 40; i++) spec.push(`f:usr/lib/f${i}:${1000 * (i + 1)}`);
  spec.push(['usr/lib/link', 'hardlink', { linkname: 'usr/lib/f39' }]);
  const input = layers(spec);
  const plan = planSquash(mergeLayers(input), 1, { layers: 4 });
  const outputsOf = new Map<string, number>();
  for (const header of writtenIn(plan, input, 0)) outputsOf.set(header.path, header.output);
  assert.equal(outputsOf.size, 41, 'every leaf emitted once');
  assert.equal(outputsOf.get('usr/lib/link'), outputsOf.get('usr/lib/f39'), 'hardlink group in one output');
  for (let out = 0; out < 4; out++) {
    const dirs = plan.directories[out]!.map((h) => h.path);
    if ([...outputsOf.values()].includes(out)) assert.deepEqual(dirs.filter((d) => d.startsWith('usr')), ['usr', 'usr/lib']);
  }
  assert.deepEqual(plan.directories.flat().filter((h) => h.path === 'empty').length, 1, 'an empty directory goes to one output');
  const max = Math.max(...plan.outputBytes);
  const min = Math.min(...plan.outputBytes);
  assert.ok((max - min) / max < 0.1, `balanced within 10%: ${plan.outputBytes.join(', ')}`);
});

test('plans are deterministic', () => {
  const spec: Spec[] = [];
  for (let i = 0; i < 100; i++) spec.push(`f:d${i % 7}/f${i}:${(i * 7919) % 5000}`);
  const a = planSquash(mergeLayers(layers(spec)), 1, { layers: 3 });
  const b = planSquash(mergeLayers(layers(spec)), 1, { layers: 3 });
  assert.deepEqual(a, b);
});

test('from-layer: whiteouts keep lower content hidden, topmost only, and kept layers are not re-emitted', () => {
  const all = layers(
    ['d:etc', 'f:etc/keep:1', 'f:etc/gone:1', 'd:old', 'f:old/a:1', 'f:old/b:1', 'd:dir', 'f:dir/x:1', 'f:file:1'],
    [['.wh.old', 'wh'], ['etc/.wh.gone', 'wh'], ['dir', 'directory'], ['dir/.wh..wh..opq', 'wh'], 'f:dir/y:2', ['.wh.file', 'wh'], 'd:file', 'f:file/in:1'],
  );
  const merged = mergeLayers(all);
  const lower = mergeLayers(all.slice(0, 1));
  const plan = planSquash(merged, 2, { fromLayer: 1, lower });
  assert.deepEqual(plan.whiteouts[0]!.map((h) => h.path), ['.wh.old', 'dir/.wh.x', 'etc/.wh.gone']);
  assert.equal(plan.writes[0]!.outputs.length, 0, 'nothing of the kept layer is emitted');
  assert.deepEqual(writtenIn(plan, all, 1).map((h) => h.path).sort(), ['dir/y', 'file/in']);
  assert.deepEqual(plan.directories[0]!.map((h) => h.path), ['dir', 'etc', 'file'], 'ancestors of whiteouts and entries, and replaced dirs');
});

test('from-layer: a hardlink from a squashed layer into a kept layer is refused clearly', () => {
  const all = layers(['f:lib.so:5'], [['lib.so.1', 'hardlink', { linkname: 'lib.so' }]]);
  assert.throws(() => planSquash(mergeLayers(all), 2, { fromLayer: 1, lower: mergeLayers(all.slice(0, 1)) }), /--from-layer 2: lib.so.1 in layer 2 is a hardlink to lib.so in kept layer 1/);
});

test('a parent a layer leaves out becomes a new 0755 root dir over the lower one; an entry of the layer for it wins', () => {
  const dir = (path: string, mode: number, uid: number): Spec => [path, 'directory', { mode, uid, gid: uid }];
  const lower = [dir('a', 0o750, 1000), dir('a/b', 0o700, 1000), 'f:a/b/lower:1'];
  const header = (result: MergeResult, path: string) => {
    const node = result.nodes.get(path)!;
    return node.kind === 'directory' ? [node.header.mode, node.header.uid, node.from.layer] : undefined;
  };
  // Docker 20.10 on overlay2 shows exactly this (test/squash-conformance/implied-parent.test.ts).
  const implied = mergeLayers(layers(lower, ['f:a/b/file:2']));
  assert.deepEqual([header(implied, 'a'), header(implied, 'a/b')], [[0o755, 0, 1], [0o755, 0, 1]]);
  assert.deepEqual(tree(implied), ['a/', 'a/b/', 'a/b/file file@1:a/b/file', 'a/b/lower file@0:a/b/lower'], 'the directories merge');
  // The layer's own entry for a/b sets it, even when it comes after the file in the tar.
  const explicit = mergeLayers(layers(lower, ['f:a/b/file:2', dir('a/b', 0o711, 7)]));
  assert.deepEqual([header(explicit, 'a'), header(explicit, 'a/b')], [[0o755, 0, 1], [0o711, 7, 1]]);
  // A whiteout's directory is created like any entry's.
  const whiteout = mergeLayers(layers(lower, [['a/b/.wh.lower', 'wh']]));
  assert.deepEqual(header(whiteout, 'a/b'), [0o755, 0, 1]);
  assert.deepEqual(tree(whiteout), ['a/', 'a/b/']);
});

test('an entry below a symlink, file or hardlink the same layer made is refused, naming it (docker load refuses it too)', () => {
  const refused = (entries: Spec[], entry: string, parent: string) =>
    assert.throws(
      () => mergeLayers(layers(['d:base'], entries)),
      (err: unknown) => err instanceof BuildfleetError && exitCodeFor[err.kind] === 6 && err.message.includes(`layer 2: entry "${entry}" lies below "${parent}"`),
    );
  refused([['lnk', 'symlink', { linkname: '/some/dir' }], 'f:lnk/f:1'], 'lnk/f', 'lnk');
  // Even when the symlink points at a directory: the squash never turns it into one.
  refused(['d:real', ['lnk', 'symlink', { linkname: 'real' }], 'f:lnk/f:1'], 'lnk/f', 'lnk');
  refused([['lnk', 'symlink', { linkname: 'base' }], 'd:lnk/deep', 'f:lnk/deep/f:1'], 'lnk/deep', 'lnk');
  refused(['f:file:1', 'f:file/f:1'], 'file/f', 'file');
  refused(['f:file:1', ['hl', 'hardlink', { linkname: 'file' }], ['hl/x', 'fifo']], 'hl/x', 'hl');
  refused([['lnk', 'symlink', { linkname: 'base' }], ['lnk/.wh.gone', 'wh']], 'lnk/.wh.gone', 'lnk');
  refused([['lnk', 'symlink', { linkname: 'base' }], ['lnk/sub/.wh..wh..opq', 'wh']], 'lnk/sub/.wh..wh..opq', 'lnk');
  // Entries first, then the symlink: the runtime replaces the directory it made by the symlink.
  assert.deepEqual(tree(mergeLayers(layers(['d:base'], ['f:lnk/f:1', ['lnk', 'symlink', { linkname: 'base' }]]))), ['base/', 'lnk symlink@1:lnk']);
});

test("an entry below a lower layer's symlink or file: the layer's own new directory hides it, as Docker shows", () => {
  // test/squash-conformance/symlink-parent.test.ts: Docker 20.10 (overlay2) shows lnk as a directory holding f.
  const result = mergeLayers(layers(['d:target', 'f:target/t:1', ['lnk', 'symlink', { linkname: '/target' }], 'f:file:2'], ['f:lnk/f:3', 'f:file/g:4']));
  assert.deepEqual(tree(result), ['file/', 'file/g file@1:file/g', 'lnk/', 'lnk/f file@1:lnk/f', 'target/', 'target/t file@0:target/t']);
  const lnk = result.nodes.get('lnk')!;
  assert.ok(lnk.kind === 'directory' && lnk.implied && lnk.header.mode === 0o755);
});
