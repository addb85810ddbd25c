import { createWriteStream, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Dockerode from 'dockerode';
import { BuildfleetError, isBuildfleetError } from '../errors.js';
import type { DaemonReference } from '../oci/reference.js';
import type { Descriptor } from '../oci/schemas.js';
import { BlobStaging, dockerArchiveChunks, openDockerArchiveFile, repoTagsFor } from './docker-archive.js';
import type { BlobToStore, DestinationPreferences, ImageDestination, ImageSource } from './types.js';
import { makeScratchDir, removeTemp } from './temp-files.js';

/**
 * docker-daemon: a Docker Engine's image store, through `docker save` (GET /images/NAME/get)
 * and `docker load` (POST /images/load). Both carry a docker-archive, so this transport is the
 * archive transport plus a spool file (reading) or a streamed request body (writing).
 */

/** The part of TransportOptions (transports/index.ts) this transport uses. */
export type DaemonOptions = { docker?: Dockerode; tmpDir?: string };

/**
 * A Docker client for DOCKER_HOST (`unix:///path` or `tcp://host:port`, TLS from
 * DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), default /var/run/docker.sock.
 */
export function dockerFromEnvironment(env: NodeJS.ProcessEnv = process.env): Dockerode {
  const host = env.DOCKER_HOST?.trim();
  if (!host) return new Dockerode({ socketPath: '/var/run/docker.sock' });
  if (host.startsWith('unix://')) return new Dockerode({ socketPath: host.slice('unix://'.length) || '/var/run/docker.sock' });
  if (host.startsWith('tcp://')) {
    let url: URL;
    try {
      url = new URL(host);
    } catch {
      throw new BuildfleetError('usage', `DOCKER_HOST=${host} is not a valid tcp://HOST:PORT address`);
    }
    const tls = (env.DOCKER_TLS_VERIFY !== undefined && env.DOCKER_TLS_VERIFY !== '' && env.DOCKER_TLS_VERIFY !== '0') || url.port === '2376';
    const certPath = env.DOCKER_CERT_PATH;
    const read = (file: string) => {
      try {
        return readFileSync(join(certPath!, file));
      } catch (err) {
        throw new BuildfleetError('environment', `DOCKER_CERT_PATH: cannot read ${file}: ${(err as Error).message}`);
      }
    };
    return new Dockerode({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || (tls ? 2376 : 2375),
      protocol: tls ? 'https' : 'http',
      ...(tls && certPath && { ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem') }),
    });
  }
  throw new BuildfleetError('usage', `DOCKER_HOST=${host} is not supported: use unix:///PATH or tcp://HOST:PORT`);
}

/** Where a client points, for messages: unix:///run/docker.sock or tcp://host:port. */
export function dockerEndpoint(docker: Dockerode): string {
  const modem = docker.modem as unknown as { socketPath?: unknown; host?: unknown; port?: unknown; protocol?: unknown };
  if (typeof modem.socketPath === 'string') return `unix://${modem.socketPath}`;
  return `${modem.protocol === 'https' ? 'https' : 'tcp'}://${String(modem.host ?? 'localhost')}:${String(modem.port ?? '')}`;
}

const unreachableCodes = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EACCES', 'ECONNABORTED']);

/** Turns a dockerode error into a one-line BuildfleetError. */
function daemonError(err: unknown, endpoint: string, doing: string): BuildfleetError {
  if (isBuildfleetError(err)) return err;
  const e = err as { code?: string; statusCode?: number; message?: string; json?: { message?: string } | null };
  if (e.code && unreachableCodes.has(e.code)) {
    const kind = e.code === 'EACCES' ? 'environment' : 'network';
    return new BuildfleetError(kind, `cannot reach the Docker daemon at ${endpoint} (${e.code}) while ${doing}`, { cause: err });
  }
  const detail = (e.json?.message ?? e.message ?? String(err)).split('\n')[0]!.replace(/^\(HTTP code \d+\) [^-]*- /, '');
  if (e.statusCode === 404) return new BuildfleetError('not-found', `${doing}: ${detail}`, { cause: err });
  return new BuildfleetError('environment', `Docker daemon at ${endpoint} failed while ${doing}: ${detail}`, { cause: err });
}

function daemonName(ref: DaemonReference): string {
  if (ref.imageId) return ref.imageId;
  return ref.digest ? `${ref.name}@${ref.digest}` : `${ref.name}:${ref.tag ?? 'latest'}`;
}

export async function openDaemonSource(ref: DaemonReference, options: DaemonOptions = {}): Promise<ImageSource> {
  const docker = options.docker ?? dockerFromEnvironment();
  const endpoint = dockerEndpoint(docker);
  const name = daemonName(ref);
  let imageId: string;
  try {
    imageId = ((await docker.getImage(name).inspect()) as { Id: string }).Id;
  } catch (err) {
    const e = err as { statusCode?: number };
    if (e.statusCode === 404) throw new BuildfleetError('not-found', `image ${name} not found in the Docker daemon at ${endpoint}`);
    throw daemonError(err, endpoint, `looking up image ${name}`);
  }
  const spoolDir = await makeScratchDir(options.tmpDir ?? tmpdir(), 'daemon');
  const removeSpool = () => removeTemp(spoolDir);
  try {
    const spool = join(spoolDir, 'image.tar');
    try {
      const saved = (await docker.getImage(name).get()) as unknown as Readable;
      await pipeline(saved, createWriteStream(spool, { flags: 'wx' }));
    } catch (err) {
      throw daemonError(err, endpoint, `saving image ${name}`);
    }
    // `docker save NAME` holds that one image; by id it may be untagged, so select by config digest
    // (the image id of the classic store; a containerd-store id is a manifest digest: then the only entry).
    return await openDockerArchiveFile(spool, ref, { configDigest: imageId }, removeSpool, `docker-daemon:${name}`);
  } catch (err) {
    await removeSpool();
    throw err;
  }
}

type LoadEvent = { stream?: string; status?: string; error?: string; errorDetail?: { message?: string } };

/** A content problem (bad diff_id, broken tar) or the daemon's own (disk full, permissions). */
function loadErrorKind(message: string): 'integrity' | 'format' | 'environment' {
  if (/no space|permission denied|read-only file system|too many open files/i.test(message)) return 'environment';
  if (/diff ?id|digest|checksum|unexpected EOF/i.test(message)) return 'integrity';
  return 'format';
}

/** Reads the JSON lines `docker load` answers with; fails on the first error event. */
async function readLoadOutput(response: NodeJS.ReadableStream, label: string): Promise<string[]> {
  const messages: string[] = [];
  let buffered = '';
  const handle = (line: string) => {
    if (line.trim() === '') return;
    let event: LoadEvent;
    try {
      event = JSON.parse(line) as LoadEvent;
    } catch {
      messages.push(line.trim());
      return;
    }
    if (event.error || event.errorDetail) {
      const message = (event.errorDetail?.message ?? event.error ?? 'unknown error').trim().split('\n')[0] ?? '';
      throw new BuildfleetError(loadErrorKind(message), `${label}: docker load failed: ${message}`);
    }
    const text = (event.stream ?? event.status ?? '').trim();
    if (text) messages.push(text);
  };
  for await (const chunk of response as AsyncIterable<Buffer | string>) {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) handle(line);
  }
  handle(buffered);
  return messages;
}

/** Major version of the engine, e.g. 20 for 20.10.24; undefined when the daemon does not say. */
async function engineMajor(docker: Dockerode): Promise<number | undefined> {
  try {
    const version = (await docker.version()) as { Version?: string };
    const major = Number(version.Version?.split('.')[0]);
    return Number.isFinite(major) ? major : undefined;
  } catch {
    return undefined;
  }
}

class DaemonDestination implements ImageDestination {
  // Verified with Docker 20.10 (docker-daemon.test.ts): docker load inflates gzip layers itself.
  readonly preferences: DestinationPreferences = { manifestFormat: 'docker', layerCompression: 'keep' };
  private done = false;

  constructor(
    readonly reference: DaemonReference,
    private readonly docker: Dockerode,
    private readonly endpoint: string,
    private readonly staging: BlobStaging,
    private readonly label: string,
  ) {}

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    return this.staging.has(descriptor.digest);
  }

  putBlob(open: () => Promise<Readable>, blob: BlobToStore): Promise<Descriptor> {
    return this.staging.put(open, blob);
  }

  async putManifest(manifestBytes: Buffer, mediaType: string): Promise<string> {
    const major = await engineMajor(this.docker);
    const rejectZstd = major !== undefined && major < 23 ? `Docker ${major} cannot load zstd layers (Docker 23+ can)` : undefined;
    const repoTags = this.reference.imageId ? [] : repoTagsFor(this.reference.name, this.reference.tag);
    return this.staging.putManifest(manifestBytes, mediaType, repoTags, rejectZstd ? { rejectZstd } : {});
  }

  async commit(): Promise<void> {
    const image = this.staging.image;
    const body = new PassThrough();
    // Stream the archive as the request body; remember a failure to make it, do not leave it unhandled.
    const producing = pipeline(Readable.from(dockerArchiveChunks(image.archive)), body).then(
      () => undefined,
      (err: unknown) => err,
    );
    let messages: string[];
    try {
      const response = await this.docker.loadImage(body, { quiet: false });
      messages = await readLoadOutput(response, this.label);
    } catch (err) {
      body.destroy();
      const produceError = await producing;
      if (produceError && isBuildfleetError(produceError)) throw produceError;
      throw daemonError(err, this.endpoint, `loading ${this.label}`);
    }
    const produceError = await producing;
    if (produceError) throw produceError instanceof Error ? produceError : new Error(String(produceError));

    // The image the daemon now has must be the one we sent: same layers, in order.
    const wanted = image.config.rootfs.diff_ids;
    const tag = image.archive.repoTags[0];
    const lookup = tag ?? image.manifest.config.digest;
    let inspected: { RootFS?: { Layers?: string[] } };
    try {
      inspected = (await this.docker.getImage(lookup).inspect()) as typeof inspected;
    } catch (err) {
      throw daemonError(err, this.endpoint, `inspecting ${lookup} after docker load (${messages.join('; ')})`);
    }
    const layers = inspected.RootFS?.Layers ?? [];
    if (layers.length !== wanted.length || layers.some((l, i) => l !== wanted[i])) {
      throw new BuildfleetError(
        'integrity',
        `${this.label}: after docker load, ${lookup} has layers [${layers.join(', ')}], expected the config's diff_ids [${wanted.join(', ')}]`,
      );
    }
    this.done = true;
    await this.staging.remove();
  }

  async abort(): Promise<void> {
    if (!this.done) await this.staging.remove();
  }
}

export async function openDaemonDestination(ref: DaemonReference, options: DaemonOptions = {}): Promise<ImageDestination> {
  if (ref.digest && !ref.imageId) {
    throw new BuildfleetError('usage', `docker-daemon:${ref.name}@${ref.digest}: a Docker daemon destination needs NAME:TAG, not a digest`);
  }
  const docker = options.docker ?? dockerFromEnvironment();
  const label = `docker-daemon:${daemonName(ref)}`;
  const staging = await BlobStaging.create(options.tmpDir, label);
  return new DaemonDestination(ref, docker, dockerEndpoint(docker), staging, label);
}
