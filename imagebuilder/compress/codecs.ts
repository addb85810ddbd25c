import { spawn } from 'node:child_process';
import { Duplex, PassThrough, type Readable, type Transform } from 'node:stream';
import { createGunzip, createGzip, constants as zlibConstants } from 'node:zlib';
import { BuildfleetError } from '../errors.js';
import type { Compression } from '../oci/media-types.js';
import { pipeOn } from './streams.js';

/**
 * Layer (de)compression as streams. gzip is Node's zlib (deterministic: no name, mtime 0, so the
 * same tar gives the same blob); zstd goes through Debian's `zstd` binary because Node 20 has no
 * zstd in zlib.
 */
export function decompressor(compression: Compression): Transform | Duplex {
  switch (compression) {
    case 'none':
      return new PassThrough();
    case 'gzip':
      return createGunzip({ chunkSize: 1 << 20 }); // fewer, larger chunks: less per-chunk overhead on the main thread
    case 'zstd':
      return processStream('zstd', ['-d', '-c', '-q']);
  }
}

export function compressor(compression: Compression, level?: number): Transform | Duplex {
  switch (compression) {
    case 'none':
      return new PassThrough();
    case 'gzip':
      return createGzip({ level: level ?? zlibConstants.Z_DEFAULT_COMPRESSION });
    case 'zstd':
      return processStream('zstd', ['-c', '-q', `-${level ?? 3}`, '-T0']);
  }
}

/** Pipes `source` through decompression of `from` and compression to `to`; identity when equal. */
export function recompress(source: Readable, from: Compression, to: Compression, level?: number): Readable {
  if (from === to) return source;
  let stream: Readable = source;
  if (from !== 'none') stream = pipeOn(stream, decompressor(from));
  if (to !== 'none') stream = pipeOn(stream, compressor(to, level));
  return stream;
}

/**
 * A child process as a Duplex: writes go to its stdin, reads come from its stdout. The readable
 * side ends only after the process exits 0, so a failed (de)compression can never look like a
 * short, successful one.
 */
function processStream(command: string, args: string[]): Duplex {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const output = new PassThrough();
  child.stdout.pipe(output, { end: false });
  const duplex = Duplex.from({ writable: child.stdin, readable: output });
  child.stdin.on('error', () => {}); // EPIPE when the process dies early; 'close' reports why
  child.once('error', (err) => {
    duplex.destroy(new BuildfleetError('environment', `${command} could not run (${(err as NodeJS.ErrnoException).code ?? err.message}): install it with "apt-get install -y ${command}"`));
  });
  child.once('close', (code, signal) => {
    if (code === 0) output.end();
    else duplex.destroy(new BuildfleetError('format', `${command} ${args.join(' ')} failed: ${stderr.trim().split('\n')[0] || `exit ${code ?? signal}`}`));
  });
  duplex.once('close', () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return duplex;
}
