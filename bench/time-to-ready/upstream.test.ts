import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { appendFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryServer } from '../../nodepool/daemons/index.js';
import { RegistryServedBytes, Upstream, warmRegistryBlobs } from './upstream.js';

// The bench's upstream: with a cap, a relay all connections share as one link, counting what it serves; without, the registry's own count.
const body = Buffer.alloc(1 << 20, 7);
let server: Server;
let port: number;
before(async () => {
  server = createServer((_req, res) => res.end(body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

const fetchVia = async (upstream: Upstream) => Buffer.from(await (await fetch(`http://${upstream.host}/blob`)).arrayBuffer());

test('the capped relay counts the bytes it serves, whole and unchanged', async () => {
  const upstream = await Upstream.start(port, { mbps: 8000 }); // 1 GB/s: the 1 MiB body in about a millisecond
  try {
    assert.ok((await fetchVia(upstream)).equals(body));
    const served = await upstream.takeBytes();
    assert.ok(served > body.length && served < body.length + 1024, `${served} bytes: the body and its headers`);
    assert.equal(await upstream.takeBytes(), 0, 'the count starts again');
  } finally {
    await upstream.stop();
  }
});

test('with a cap, two downloads at once share one link: together they take what their sum takes', async () => {
  const upstream = await Upstream.start(port, { mbps: 8 }); // 1 MB/s
  try {
    const started = performance.now();
    const both = await Promise.all([fetchVia(upstream), fetchVia(upstream)]);
    const seconds = (performance.now() - started) / 1000;
    for (const received of both) assert.ok(received.equals(body));
    // 2 MiB at 1 MB/s: at least 2 s whatever else the machine does (a floor, not a speed claim).
    assert.ok(seconds >= 1.9, `${seconds.toFixed(2)} s`);
  } finally {
    await upstream.stop();
  }
});

test('without a cap, the bytes are the registry access log\'s own count, from where it stood when opened', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bf-upstream-log-'));
  const log = join(dir, 'registry.log');
  // Lines as distribution 2.8 writes them: the app log's "response completed" carries the bytes; the combined access log line repeats them.
  const completed = (digest: string, written: number) =>
    `time="2026-12-06T06:08:51.565Z" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/ttr/build/blobs/${digest}" http.response.status=200 http.response.written=${written}\n` +
    `127.0.0.1 - - [06/Dec/2026:06:08:49 +0000] "GET /v2/ttr/build/blobs/${digest} HTTP/1.1" 200 ${written} "" "curl/7.88.1"\n`;
  try {
    await writeFile(log, completed('sha256:old', 999) + 'time="x" level=info msg="listening on 127.0.0.1:5000"\n');
    const counter = await RegistryServedBytes.open('127.0.0.1:5000', log);
    await appendFile(log, completed('sha256:a', 1000) + completed('sha256:b', 234) + 'time="y" level=info msg="response completed" http.response.written=');
    assert.equal(await counter.takeBytes(), 1234, 'the two whole responses since open, not the half-written line');
    await appendFile(log, '66 http.request.method=HEAD\n');
    assert.equal(await counter.takeBytes(), 66, 'the line once whole');
    assert.equal(await counter.takeBytes(), 0, 'the count starts again');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("warming reads the blobs from the registry's storage layout, and names a blob that is not there", async () => {
  const storage = await mkdtemp(join(tmpdir(), 'bf-warm-'));
  try {
    const hex = 'ab'.padEnd(64, '0');
    await mkdir(join(storage, 'docker', 'registry', 'v2', 'blobs', 'sha256', 'ab', hex), { recursive: true });
    await writeFile(join(storage, 'docker', 'registry', 'v2', 'blobs', 'sha256', 'ab', hex, 'data'), Buffer.alloc(3 << 20, 1));
    // The registry server's own layout (its blobFile), over a storage dir made here.
    const registry = { blobFile: (digest: string) => RegistryServer.prototype.blobFile.call({ storageDir: storage }, digest) };
    await warmRegistryBlobs(registry, [`sha256:${hex}`]);
    const missing = `sha256:${'cd'.padEnd(64, '0')}`;
    await assert.rejects(warmRegistryBlobs(registry, [`sha256:${hex}`, missing]), (err: Error) => err.message.startsWith(`blob ${missing} is not in the registry's storage`));
  } finally {
    await rm(storage, { recursive: true, force: true });
  }
});
