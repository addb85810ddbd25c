import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, mkdir, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { SharedBlobCache } from './blob-cache.js';
import { waitFor } from '../../test/helpers/wait.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'buildfleet-blob-cache-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const blob = randomBytes(3 << 20);
const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
const hex = digest.slice('sha256:'.length);

/** A fetch that counts its calls and delivers `bytes` in chunks, optionally failing after `failAfter` bytes. */
function upstream(bytes: Buffer, options: { failAfter?: number } = {}) {
  const counter = { calls: 0 };
  const fetch = () => {
    counter.calls++;
    return Readable.from(
      (async function* () {
        for (let at = 0; at < bytes.length; at += 256 << 10) {
          if (options.failAfter !== undefined && at >= options.failAfter) throw new Error('connection reset');
          await new Promise((resolve) => setTimeout(resolve, 2));
          yield bytes.subarray(at, at + (256 << 10));
        }
      })(),
    );
  };
  return { fetch, counter };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test('nodes asking for a blob at once: one fetch upstream, the others read it from the cache', async () => {
  const cacheDir = join(dir, 'once');
  const { fetch, counter } = upstream(blob);
  const caches = [0, 1, 2, 3].map(() => new SharedBlobCache(cacheDir));
  const opened = await Promise.all(caches.map((cache) => cache.open(digest, fetch).then(async ({ stream, from }) => ({ from, bytes: await readAll(stream) }))));
  assert.equal(counter.calls, 1);
  assert.deepEqual(opened.map((o) => o.from).sort(), ['cache', 'cache', 'cache', 'upstream']);
  for (const { bytes } of opened) assert.ok(bytes.equals(blob));
  assert.deepEqual(await readdir(join(cacheDir, 'sha256')), [hex], 'the blob under its name, no lock or partial file left');
});

test('a fetch that fails leaves nothing under the blob name; a waiting node fetches it itself', async () => {
  const cacheDir = join(dir, 'fails');
  const failing = upstream(blob, { failAfter: 1 << 20 });
  const working = upstream(blob);
  const first = await new SharedBlobCache(cacheDir).open(digest, failing.fetch);
  const second = new SharedBlobCache(cacheDir).open(digest, working.fetch);
  await assert.rejects(readAll(first.stream), /connection reset/);
  const taken = await second;
  assert.equal(taken.from, 'upstream');
  assert.ok((await readAll(taken.stream)).equals(blob));
  assert.deepEqual(await readdir(join(cacheDir, 'sha256')), [hex]);
});

test('bytes that do not match the digest fail the stream and are never named as the blob', async () => {
  const cacheDir = join(dir, 'corrupt');
  const wrong = Buffer.from(blob);
  wrong[1000] = wrong[1000]! ^ 0xff;
  const { stream } = await new SharedBlobCache(cacheDir).open(digest, upstream(wrong).fetch);
  // The reader never sees an end it could take as "verified".
  await assert.rejects(readAll(stream), /content digest sha256:[0-9a-f]{64} does not match/);
  // The partial file and the lock go as the stream closes.
  await waitFor('the partial file and the lock removed', 5000, async () => (await readdir(join(cacheDir, 'sha256'))).length === 0);
});

test('a lock left by a fetcher that died is taken over', async () => {
  const cacheDir = join(dir, 'stale');
  await mkdir(join(cacheDir, 'sha256'), { recursive: true });
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  const deadPartial = join(cacheDir, 'sha256', `${hex}.${dead}.dead.partial`);
  await writeFile(join(cacheDir, 'sha256', `${hex}.lock`), `${dead} ${hostname()} ${deadPartial}\n`);
  await writeFile(deadPartial, blob.subarray(0, 100));
  const { fetch, counter } = upstream(blob);
  const { stream, from } = await new SharedBlobCache(cacheDir).open(digest, fetch);
  assert.equal(from, 'upstream');
  assert.ok((await readAll(stream)).equals(blob));
  assert.equal(counter.calls, 1);
  assert.ok((await readFile(join(cacheDir, 'sha256', hex))).equals(blob));
  assert.deepEqual(await readdir(join(cacheDir, 'sha256')), [hex]);
});

test('many waiters breaking the same dead lock at once: every one of them gets the whole blob, and only the blob stays', async () => {
  for (let round = 0; round < 10; round++) {
    const cacheDir = join(dir, `race-${round}`);
    await mkdir(join(cacheDir, 'sha256'), { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    await writeFile(join(cacheDir, 'sha256', `${hex}.lock`), `${dead} ${hostname()} ${join(cacheDir, 'sha256', 'gone.partial')}\n`);
    const { fetch } = upstream(blob);
    const got = await Promise.all([0, 1, 2, 3, 4, 5].map(async () => readAll((await new SharedBlobCache(cacheDir).open(digest, fetch)).stream)));
    for (const bytes of got) assert.ok(bytes.equals(blob));
    assert.deepEqual(await readdir(join(cacheDir, 'sha256')), [hex]);
  }
});
