import { BuildfleetError } from '../../imagebuilder/errors.js';
import { extractLayer, type ExtractRequest } from './layer-extract.js';
import { UnsupportedLayer } from './layer-walk.js';

/**
 * An extraction child process (see extract-child.ts): the layer's compressed bytes on stdin, the
 * request as JSON in argv, one JSON line on stdout: `{"ok":{...}}` or `{"error":{...}}`.
 */

export type ChildAnswer =
  | { ok: { diffId: string; sizeOnDisk: number; entries: number; tarSplit: string } }
  | { error: { message: string; kind?: string; unsupported?: boolean } };

const request = JSON.parse(process.argv[2] ?? '{}') as ExtractRequest;
const stop = new AbortController();
process.once('SIGTERM', () => stop.abort(new BuildfleetError('environment', `${request.what}: extraction stopped`)));
let answer: ChildAnswer;
try {
  const layer = await extractLayer([process.stdin], request, stop.signal);
  answer = { ok: { ...layer, tarSplit: layer.tarSplit.toString('base64') } };
} catch (err) {
  const error = err as Error;
  answer = { error: { message: error.message, ...(error instanceof BuildfleetError && { kind: error.kind }), ...(error instanceof UnsupportedLayer && { unsupported: true }) } };
  process.exitCode = 1;
}
process.stdout.write(`${JSON.stringify(answer)}\n`);
