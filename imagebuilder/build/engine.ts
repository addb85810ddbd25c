import type { Readable } from 'node:stream';
import type Dockerode from 'dockerode';
import { BuildfleetError, isBuildfleetError } from '../errors.js';
import { dockerEndpoint } from '../transports/docker-daemon.js';
import { BuildOutput } from './build-output.js';
import { contextTar, type BuildContext } from './context.js';

/** What the engine is asked to build (POST /build of the Engine API, classic builder). */
export type EngineBuildRequest = {
  /** NAME:TAG the engine tags the result with. */
  tag: string;
  buildArgs?: Record<string, string>;
  labels?: Record<string, string>;
  target?: string;
  /** RUN steps' network (`none`, `host`, a network name); the engine's default when unset. */
  network?: string;
  noCache?: boolean;
  /** Look for a newer base image in its registry (`docker build --pull`). */
  pull?: boolean;
};

export type EngineBuildResult = { imageId: string; steps: number; contextBytes: number };

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND']);

/**
 * Sends the context to the engine and follows the build: the build's text goes to `log` as it
 * comes; a failed step is a `build` error (exit 10) naming it; an engine that cannot be reached
 * is an `environment` error (exit 8). Intermediate containers are removed also on failure.
 */
export async function buildOnEngine(
  docker: Dockerode,
  context: BuildContext,
  request: EngineBuildRequest,
  options: { log?: (text: string) => void; signal?: AbortSignal } = {},
): Promise<EngineBuildResult> {
  const output = new BuildOutput(options.log);
  const endpoint = dockerEndpoint(docker);
  let response: NodeJS.ReadableStream;
  try {
    response = (await docker.buildImage(contextTar(context) as unknown as NodeJS.ReadableStream, {
      t: request.tag,
      dockerfile: context.dockerfile,
      rm: true,
      forcerm: true,
      ...(request.buildArgs && Object.keys(request.buildArgs).length > 0 && { buildargs: request.buildArgs }),
      ...(request.labels && Object.keys(request.labels).length > 0 && { labels: request.labels }),
      ...(request.target !== undefined && { target: request.target }),
      ...(request.network !== undefined && { networkmode: request.network }),
      ...(request.noCache && { nocache: true }),
      ...(request.pull && { pull: true }),
      ...(options.signal && { abortSignal: options.signal }),
    })) as NodeJS.ReadableStream;
  } catch (err) {
    throw engineError(err, endpoint, output);
  }
  try {
    for await (const chunk of response as AsyncIterable<Buffer | string>) output.push(chunk.toString());
  } catch (err) {
    (response as Readable).destroy?.();
    throw engineError(err, endpoint, output);
  }
  return { ...output.end(), contextBytes: context.bytes };
}

/** A refused request (a bad Dockerfile, an unknown target) is the build's failure; a lost engine is the machine's. */
function engineError(err: unknown, endpoint: string, output: BuildOutput): BuildfleetError {
  if (isBuildfleetError(err)) return err;
  const e = err as { code?: string; statusCode?: number; message?: string; json?: { message?: string } | null };
  if (e.code && UNREACHABLE.has(e.code)) {
    return new BuildfleetError('environment', `cannot reach the Docker daemon at ${endpoint} (${e.code})${output.where() ? ` during the build${output.where()}` : ''}`, { cause: err });
  }
  const detail = (e.json?.message ?? e.message ?? String(err)).trim().split('\n')[0]!.replace(/^\(HTTP code \d+\) [^-]*- /, '');
  if (e.statusCode !== undefined) return new BuildfleetError('build', `build failed${output.where()}: ${detail}`, { cause: err });
  return new BuildfleetError('environment', `the build on the Docker daemon at ${endpoint} broke off${output.where()}: ${detail}`, { cause: err });
}
