import { spawn } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { BuildfleetError, type ErrorKind } from '../../imagebuilder/errors.js';
import { packageEntry, packageRoot } from '../../imagebuilder/package-root.js';
import type { CompressedInput, ExtractedLayer, ExtractRequest } from './layer-extract.js';
import { UnsupportedLayer } from './layer-walk.js';
import type { ChildAnswer } from './extract-process.js';

/**
 * A big layer extracted by a child process of its own. Decompressing is on libuv's pool either
 * way, but walking the tar, tar-split and feeding GNU tar is main-thread work: a few big layers in
 * one process take turns on one core, each in its own process they take every core. The child
 * runs extractLayer as the installing process would, on the compressed bytes piped to it.
 */
export async function extractInChild(compressed: CompressedInput, request: ExtractRequest, signal: AbortSignal): Promise<ExtractedLayer> {
  signal.throwIfAborted();
  const entry = packageEntry('nodepool/prepull/extract-process.ts');
  // Its own process group: stopping it stops the tar it started too.
  const child = spawn(process.execPath, [...entry.nodeArgs, entry.file, JSON.stringify(request)], { cwd: packageRoot, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  let gone = false;
  const kill = () => {
    try {
      // Only while it runs: a group id is free for reuse once its process is reaped.
      if (child.pid && !gone) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  signal.addEventListener('abort', kill, { once: true });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4000)));
  const closed = new Promise<number | null>((resolve) => {
    child.once('error', () => resolve(null));
    child.once('close', (code) => resolve(code));
  }).finally(() => (gone = true));
  try {
    const fed = pipeline([...compressed, child.stdin]).then(
      () => undefined,
      (err: Error) => err,
    );
    const [feedError, code] = await Promise.all([
      fed.then((err) => {
        // The input failed (a download that broke for good, a digest that did not match): that is the error, whatever the child says of its short input.
        if (err && !isBrokenPipe(err)) kill();
        return err;
      }),
      closed,
    ]);
    if (feedError && !isBrokenPipe(feedError)) throw feedError;
    signal.throwIfAborted();
    const answer = parseAnswer(stdout);
    if (answer && 'ok' in answer) {
      if (code !== 0) throw new BuildfleetError('environment', `${request.what}: the extraction process exited ${code}`);
      return { ...answer.ok, tarSplit: Buffer.from(answer.ok.tarSplit, 'base64') };
    }
    if (answer && 'error' in answer) {
      if (answer.error.unsupported) throw new UnsupportedLayer(answer.error.message);
      throw new BuildfleetError((answer.error.kind as ErrorKind | undefined) ?? 'environment', answer.error.message);
    }
    throw new BuildfleetError('environment', `${request.what}: the extraction process ${code === null ? 'was killed' : `exited ${code}`}: ${stderr.trim().split('\n').pop() ?? ''}`);
  } finally {
    signal.removeEventListener('abort', kill);
    kill(); // a child still running here has failed: it must not write on after we return
    await closed;
  }
}

function isBrokenPipe(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET';
}

function parseAnswer(stdout: string): ChildAnswer | undefined {
  try {
    return JSON.parse(stdout.trim().split('\n').pop() ?? '') as ChildAnswer;
  } catch {
    return undefined;
  }
}
