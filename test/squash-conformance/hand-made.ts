import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { execa } from 'execa';
import tar from 'tar-stream';
import type { DockerEngine } from '../../daemons/index.js';
import { openDestination, openSource } from '../../imagebuilder/transports/index.js';
import { squashImage, type SquashOptions } from '../../imagebuilder/squash/squash.js';

/**
 * Images with layers `docker build` never writes (a layer without its parent directories, a
 * path through a symlink), made by hand with tar-stream, an implementation apart from ours,
 * over a base Docker built. Used by the conformance tests that ask Docker what it shows for them.
 */

export type HandMadeEntry = { name: string; type?: 'file' | 'directory' | 'symlink'; linkname?: string; body?: string; mode?: number; mtime?: number };

/** One layer tar; mtime in ms since the epoch. */
export async function handMadeLayer(entries: HandMadeEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { name, type = 'file', linkname, body, mode, mtime = 1_650_000_000_000 } of entries) {
    pack.entry({ name, type, mode: mode ?? (type === 'file' ? 0o644 : type === 'directory' ? 0o755 : 0o777), uid: 0, gid: 0, mtime: new Date(mtime), ...(linkname !== undefined && { linkname }) }, body ?? '');
  }
  pack.finalize();
  return buffer(pack);
}

/**
 * `docker save`s `baseTag` and appends `layers` (config diff_ids and history, manifest.json
 * Layers), tagged `tag`: the docker-archive at the returned path, for `docker load` or a squash.
 */
export async function archiveWithLayers(engine: DockerEngine, workDir: string, baseTag: string, tag: string, layers: Buffer[]): Promise<string> {
  const name = tag.replace(/\W/g, '-');
  const dir = join(workDir, `${name}-archive`);
  await mkdir(dir, { recursive: true });
  const saved = join(workDir, `${name}-base.tar`);
  await engine.cli(['save', '-o', saved, baseTag]);
  await execa('tar', ['-xf', saved, '-C', dir]);
  await rm(join(dir, 'repositories'), { force: true });
  const [entry] = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;
  const config = JSON.parse(await readFile(join(dir, entry!.Config), 'utf8')) as { rootfs: { diff_ids: string[] }; history?: unknown[] };
  const added: string[] = [];
  for (const layer of layers) {
    const layerHex = createHash('sha256').update(layer).digest('hex');
    await mkdir(join(dir, layerHex), { recursive: true });
    await writeFile(join(dir, layerHex, 'layer.tar'), layer);
    config.rootfs.diff_ids.push(`sha256:${layerHex}`);
    config.history = [...(config.history ?? []), { created: '2022-04-15T05:20:00Z', created_by: 'hand-made layer' }];
    added.push(`${layerHex}/layer.tar`);
  }
  const configBytes = Buffer.from(JSON.stringify(config));
  const configName = `${createHash('sha256').update(configBytes).digest('hex')}.json`;
  await rm(join(dir, entry!.Config));
  await writeFile(join(dir, configName), configBytes);
  await writeFile(join(dir, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: [...entry!.Layers, ...added] }]));
  const archive = join(workDir, `${name}.tar`);
  await execa('tar', ['-cf', archive, '-C', dir, '.']);
  await rm(dir, { recursive: true, force: true });
  await rm(saved, { force: true });
  return archive;
}

/** Squashes `src` to `dst` (references any transport takes, docker-daemon: on `engine`), temp files in tmpDir. */
export async function squashOnEngine(engine: DockerEngine, tmpDir: string, src: string, dst: string, options: SquashOptions): Promise<void> {
  const transport = { docker: engine.docker, tmpDir };
  const source = await openSource(src, transport);
  try {
    await squashImage(source, await openDestination(dst, transport), { tmpDir, ...options });
  } finally {
    await source.close();
  }
}
