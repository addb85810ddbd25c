import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { Upstream } from './upstream.js';

// The bench's upstream proxy: counts what it serves; with a cap, all connections share one link.
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

test('counts the bytes it serves, whole and unchanged', async () => {
  const upstream = await Upstream.start(port);
  try {
    assert.ok((await fetchVia(upstream)).equals(body));
    const served = upstream.takeBytes();
    assert.ok(served > body.length && served < body.length + 1024, `${served} bytes: the body and its headers`);
    assert.equal(upstream.takeBytes(), 0, 'the count starts again');
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
