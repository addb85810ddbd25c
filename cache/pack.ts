import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressor, parallelGzip } from '../imagebuilder/compress/index.js';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { DigestStream } from '../imagebuilder/oci/digest.js';

/**
 * Trees to blobs and back with GNU tar: it keeps everything a toolchain needs (symlinks, hardlinks,
 * modes, times) and is on every Linux node; the registry blob is an ordinary tar+gzip (or
 * tar+zstd) layer that any OCI tool can pull. Compression here goes through imagebuilder's
 * parallel gzip (every core); decompression through unpigz when present, else gzip (the same
 * tools as the floor the bench compares with).
 */

export type Codec = 'gzip' | 'zstd';

/** Deterministic member order and owners, so one tree packs to one blob on every node. */
const PACK_ARGS = ['--sort=name', '--numeric-owner', '--owner=0', '--group=0', '-cf', '-', '.'];

/** Packs the tree at `root` into `file`; resolves to the blob's digest and size. */
export async function packTree(root: string, file: string, codec: Codec = 'gzip'): Promise<{ digest: string; size: number }> {
  const tar = spawn('tar', ['-C', root, ...PACK_ARGS], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = exitOf(tar, 'tar -c');
  const hasher = new DigestStream('sha256');
  try {
    await pipeline(tar.stdout!, codec === 'gzip' ? parallelGzip() : compressor('zstd'), hasher, createWriteStream(file));
  } catch (err) {
    tar.kill('SIGKILL');
    await exited.catch(() => {});
    throw diskError(err, `packing ${root}`);
  }
  await exited;
  return { digest: hasher.digest, size: hasher.size };
}

let unpigz: boolean | undefined;

function decompressArgs(codec: Codec): string[] {
  if (codec === 'zstd') return ['--zstd'];
  unpigz ??= spawnSync('sh', ['-c', 'command -v unpigz'], { stdio: 'ignore' }).status === 0;
  return unpigz ? ['--use-compress-program=unpigz'] : ['-z'];
}

/**
 * Extracts the blob `source` streams into `dest`. Resolves when tar has exited 0 AND the source
 * ended cleanly (a verifying stream fails instead of ending when the digest does not match), so
 * the caller publishes only what was verified.
 */
export async function unpackInto(source: Readable, dest: string, codec: Codec): Promise<void> {
  const tar = spawn('tar', ['-C', dest, '-xf', '-', ...decompressArgs(codec)], { stdio: ['pipe', 'ignore', 'pipe'] });
  const exited = exitOf(tar, 'tar -x');
  tar.stdin!.on('error', () => {}); // EPIPE when tar stops early: its exit says why
  try {
    await pipeline(source, tar.stdin!);
  } catch (err) {
    tar.kill('SIGKILL');
    await exited.catch(() => {});
    throw err;
  }
  await exited;
}

/** Resolves when the child exits 0; else a BuildfleetError with the last line of its stderr. */
function exitOf(child: ChildProcess, what: string): Promise<void> {
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4096)));
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new BuildfleetError('environment', `${what} could not run: ${err.message}`)));
    child.once('close', (code, signal) => {
      if (code === 0) return resolve();
      // tar ends with "Exiting with failure status due to previous errors": the cause is above it.
      const lines = stderr.trim().split('\n').filter((l) => l && !/Exiting with failure status/.test(l));
      const line = lines.find((l) => /No space left|Disk quota/i.test(l)) ?? lines.pop() ?? '';
      const err = new BuildfleetError(/No space left/i.test(stderr) ? 'environment' : 'format', `${what} failed (${signal ?? `exit ${code}`})${line ? `: ${line}` : ''}`);
      reject(err);
    });
  });
}

/** ENOSPC and friends as one clear line; other errors as they are. */
export function diskError(err: unknown, what: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC') return new BuildfleetError('environment', `cache: no space left on the disk while ${what}`, { cause: err });
  if (code === 'EDQUOT') return new BuildfleetError('environment', `cache: disk quota exceeded while ${what}`, { cause: err });
  return err;
}
