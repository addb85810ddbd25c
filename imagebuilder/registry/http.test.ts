import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RegistryHttp } from './http.js';

// No registry needed: a loopback server that asks for Basic credentials once, as a registry
// whose token expired in the middle of a chunked upload would.
test('a body given as a list of buffers is sent again, whole, after a 401 challenge', { timeout: 10_000 }, async () => {
  const received: Array<{ authorization?: string; body: Buffer }> = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({ ...(req.headers.authorization !== undefined && { authorization: req.headers.authorization }), body: Buffer.concat(chunks) });
      if (!req.headers.authorization) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
        return;
      }
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const http = new RegistryHttp(host, { credentials: { username: 'ci', password: 'secret' } });
    const pieces = [Buffer.from('first piece, '), Buffer.from('second piece, '), Buffer.from('last')];
    const length = pieces.reduce((sum, piece) => sum + piece.length, 0);
    const res = await http.send({ method: 'PATCH', url: '/v2/rt/blobs/uploads/x', headers: { 'content-length': String(length) }, body: pieces, scopes: [], access: 'push' });
    await res.body.dump();
    assert.equal(res.status, 202);
    assert.equal(received.length, 2);
    assert.equal(received[0]!.authorization, undefined);
    assert.match(received[1]!.authorization ?? '', /^Basic /);
    assert.equal(received[1]!.body.toString(), 'first piece, second piece, last');
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
