import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import tar from 'tar-stream';
import { MediaType } from '../imagebuilder/oci/media-types.js';
import { DigestStream, sha256Digest } from '../imagebuilder/oci/digest.js';
import { ownedTempName } from '../imagebuilder/transports/temp-files.js';
import { testCliCommand, repoRoot } from '../test/helpers/real.js';

/**
 * The real CLI interrupted mid-work: SIGTERM / SIGINT exit 143 / 130 and leave no temp files in
 * TMPDIR nor at the destination; what a SIGKILLed run leaves is swept by the next run.
 */

const root = await mkdtemp(join(tmpdir(), 'bf-interrupt-'));
const children = new Set<ResultPromise>();
after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.allSettled([...children]);
  await rm(root, { recursive: true, force: true });
});

/** An OCI layout holding one image of one uncompressed layer: a file of `mib` MiB of random bytes. */
async function writeLayout(dir: string, mib: number): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const staging = join(dir, 'blobs', 'layer.tmp');
  const pack = tar.pack();
  const hasher = new DigestStream();
  const written = pipeline(pack, hasher, createWriteStream(staging));
  let settle!: (err?: Error | null) => void;
  const stored = new Promise<void>((resolve, reject) => (settle = (err) => (err ? reject(err) : resolve())));
  const body = pack.entry({ name: 'big.bin', size: mib << 20, mode: 0o644, mtime: new Date(0) }, (err) => settle(err));
  // gzip's window is 32 KiB: repeating a 1 MiB random block costs the compressor as much as fresh bytes.
  const block = randomBytes(1 << 20);
  for (let i = 1; i < mib; i++) if (!body.write(block)) await once(body, 'drain');
  body.end(block);
  await stored;
  pack.finalize();
  await written;
  const layer = { mediaType: MediaType.ociLayer, digest: hasher.digest, size: hasher.size };
  await rename(staging, join(dir, 'blobs', 'sha256', layer.digest.slice(7)));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] }, history: [{ created_by: 'big' }] }));
  const configDescriptor = { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length };
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: configDescriptor, layers: [layer] }));
  await writeFile(join(dir, 'blobs', 'sha256', configDescriptor.digest.slice(7)), config);
  await writeFile(join(dir, 'blobs', 'sha256', sha256Digest(manifest).slice(7)), manifest);
  const entry = { mediaType: MediaType.ociManifest, digest: sha256Digest(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'v1' } };
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [entry] }));
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
}

const big = join(root, 'big');
const small = join(root, 'small');
await writeLayout(big, 384);
await writeLayout(small, 1);

function startCli(args: string[], tmp: string): ResultPromise {
  const child = execa(process.execPath, [...testCliCommand(), ...args], { cwd: repoRoot, env: { TMPDIR: tmp, CI: 'true' }, reject: false, timeout: 300_000 });
  children.add(child);
  void child.finally(() => children.delete(child));
  return child;
}

/** Names in `dir` that satisfy `match` and hold bytes already (so the process is mid-write). */
async function busyEntries(dir: string, match: (name: string) => boolean): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!match(name)) continue;
    const path = join(dir, name);
    const info = await stat(path).catch(() => undefined);
    if (!info) continue;
    const sizes = info.isDirectory() ? await Promise.all((await readdir(path).catch(() => [])).map((f) => stat(join(path, f)).then((s) => s.size, () => 0))) : [info.size];
    if (sizes.some((size) => size > 0)) found.push(name);
  }
  return found;
}

/** Waits until the CLI is mid-write of a temp `match`es in `dir`, then sends `signal`. */
async function interruptWhenBusy(child: ResultPromise, dir: string, match: (name: string) => boolean, signal: NodeJS.Signals): Promise<void> {
  const deadline = Date.now() + 120_000;
  while ((await busyEntries(dir, match)).length === 0) {
    if (child.exitCode !== null) assert.fail(`the CLI ended before it was interrupted: ${String((await child).stderr)}`);
    assert.ok(Date.now() < deadline, `no busy temp in ${dir}`);
    await sleep(10);
  }
  child.kill(signal);
}

const isScratch = (kind: string) => (name: string) => name.startsWith(`buildfleet-${kind}-`);
const isDotTemp = (name: string) => name.startsWith('.') && name.includes('.tmp-');

async function assertNoTempsInLayout(dir: string): Promise<void> {
  const algDir = join(dir, 'blobs', 'sha256');
  assert.deepEqual([...(await readdir(dir).catch(() => [])), ...(await readdir(algDir).catch(() => []))].filter(isDotTemp), []);
}

async function indexEntries(dir: string): Promise<unknown[]> {
  const text = await readFile(join(dir, 'index.json'), 'utf8').catch(() => '{"manifests":[]}');
  return (JSON.parse(text) as { manifests: unknown[] }).manifests;
}

async function freshTmp(): Promise<string> {
  return mkdtemp(join(root, 'tmp-'));
}

/** What buildfleet left in a TMPDIR (tsx keeps its own cache there). */
async function buildfleetTemps(tmp: string): Promise<string[]> {
  return (await readdir(tmp)).filter((name) => name.startsWith('buildfleet-')).sort();
}

for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
  test(`${signal} stops a squash (exit ${code}): its spool is removed and the destination names nothing`, { timeout: 300_000 }, async () => {
    const tmp = await freshTmp();
    const dst = join(root, `squashed-${signal}`);
    const child = startCli(['image', 'squash', `oci:${big}:v1`, `oci:${dst}:sq`], tmp);
    await interruptWhenBusy(child, tmp, isScratch('squash'), signal);
    const result = await child;
    assert.equal(result.exitCode, code, `signal ${result.signal}; ${result.stderr}`);
    assert.deepEqual(await buildfleetTemps(tmp), []);
    await assertNoTempsInLayout(dst);
    assert.deepEqual(await indexEntries(dst), []);
  });
}

test('SIGTERM stops a copy to a docker-archive (exit 143): no staging dir, no archive, no temp beside it', { timeout: 300_000 }, async () => {
  const tmp = await freshTmp();
  const out = join(root, 'archive-out');
  await mkdir(out);
  const child = startCli(['image', 'copy', `oci:${big}:v1`, `docker-archive:${join(out, 'img.tar')}:img:v1`], tmp);
  await interruptWhenBusy(child, tmp, isScratch('staging'), 'SIGTERM');
  const result = await child;
  assert.equal(result.exitCode, 143, `signal ${result.signal}; ${result.stderr}`);
  assert.deepEqual(await buildfleetTemps(tmp), []);
  assert.deepEqual(await readdir(out), []);
});

test('SIGTERM stops a copy into an OCI layout (exit 143): no temp files, no index entry', { timeout: 300_000 }, async () => {
  const tmp = await freshTmp();
  const dst = join(root, 'copied');
  const child = startCli(['image', 'copy', `oci:${big}:v1`, `oci:${dst}:v1`], tmp);
  await interruptWhenBusy(child, join(dst, 'blobs', 'sha256'), isDotTemp, 'SIGTERM');
  const result = await child;
  assert.equal(result.exitCode, 143, `signal ${result.signal}; ${result.stderr}`);
  await assertNoTempsInLayout(dst);
  assert.deepEqual(await indexEntries(dst), []);
  assert.deepEqual(await buildfleetTemps(tmp), []);
});

test('the next run sweeps what SIGKILLed runs left, and leaves a live process\'s temp files alone', { timeout: 300_000 }, async () => {
  const tmp = await freshTmp();
  const dst = join(root, 'swept');
  const squash = startCli(['image', 'squash', `oci:${big}:v1`, `oci:${join(root, 'never')}:x`], tmp);
  await interruptWhenBusy(squash, tmp, isScratch('squash'), 'SIGKILL');
  await squash;
  const copy = startCli(['image', 'copy', `oci:${big}:v1`, `oci:${dst}:v1`], tmp);
  await interruptWhenBusy(copy, join(dst, 'blobs', 'sha256'), isDotTemp, 'SIGKILL');
  await copy;
  const deadSpool = await buildfleetTemps(tmp);
  const deadBlob = (await readdir(join(dst, 'blobs', 'sha256'))).filter(isDotTemp);
  assert.equal(deadSpool.length, 1, 'the killed squash left its spool');
  assert.ok(deadBlob.length >= 1, 'the killed copy left its partial blob');

  const live = execa('sleep', ['300']);
  children.add(live);
  const liveSpool = ownedTempName('buildfleet-squash-', live.pid);
  const liveStaging = ownedTempName('buildfleet-staging-', live.pid);
  const liveBlob = ownedTempName(`.${'a'.repeat(64)}.tmp-`, live.pid);
  await mkdir(join(tmp, liveSpool));
  await writeFile(join(tmp, liveSpool, 'layer-0.tar'), 'in use');
  await mkdir(join(tmp, liveStaging));
  await writeFile(join(dst, 'blobs', 'sha256', liveBlob), 'in use');

  const next = await startCli(['image', 'squash', `oci:${small}:v1`, `oci:${dst}:small`], tmp);
  assert.equal(next.exitCode, 0, String(next.stderr));
  assert.deepEqual(await buildfleetTemps(tmp), [liveSpool, liveStaging].sort());
  assert.deepEqual((await readdir(join(dst, 'blobs', 'sha256'))).filter(isDotTemp), [liveBlob]);
  live.kill('SIGKILL');
});
