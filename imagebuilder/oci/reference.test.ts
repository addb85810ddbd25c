import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseReference, formatReference, isLoopbackHost } from './reference.js';
import { BuildfleetError } from '../errors.js';

const digest = 'sha256:' + 'a'.repeat(64);

test('bare references normalise like Docker', () => {
  assert.deepEqual(parseReference('busybox'), { transport: 'registry', registry: 'docker.io', repository: 'library/busybox' });
  assert.deepEqual(parseReference('busybox:1.36'), { transport: 'registry', registry: 'docker.io', repository: 'library/busybox', tag: '1.36' });
  assert.deepEqual(parseReference('127.0.0.1:5000/ci/build:v1'), { transport: 'registry', registry: '127.0.0.1:5000', repository: 'ci/build', tag: 'v1' });
  assert.deepEqual(parseReference(`localhost:5000/build@${digest}`), { transport: 'registry', registry: 'localhost:5000', repository: 'build', digest });
  assert.deepEqual(parseReference('docker://ghcr.io/org/img:tag'), { transport: 'registry', registry: 'ghcr.io', repository: 'org/img', tag: 'tag' });
  assert.deepEqual(parseReference('user/img'), { transport: 'registry', registry: 'docker.io', repository: 'user/img' });
});

test('transport references', () => {
  assert.deepEqual(parseReference('docker-daemon:build:v1'), { transport: 'docker-daemon', name: 'build', tag: 'v1' });
  assert.deepEqual(parseReference('docker-daemon:127.0.0.1:5000/x:y'), { transport: 'docker-daemon', name: '127.0.0.1:5000/x', tag: 'y' });
  assert.deepEqual(parseReference(`docker-daemon:${digest}`), { transport: 'docker-daemon', name: digest, imageId: digest });
  assert.deepEqual(parseReference('docker-archive:/tmp/a.tar'), { transport: 'docker-archive', path: '/tmp/a.tar' });
  assert.deepEqual(parseReference('docker-archive:/tmp/a.tar:img:v2'), { transport: 'docker-archive', path: '/tmp/a.tar', name: 'img', tag: 'v2' });
  assert.deepEqual(parseReference('oci:/tmp/layout:v3'), { transport: 'oci', path: '/tmp/layout', tag: 'v3' });
  assert.deepEqual(parseReference('oci:/tmp/layout'), { transport: 'oci', path: '/tmp/layout' });
});

test('format round-trips', () => {
  for (const text of ['docker://127.0.0.1:5000/a/b:c', `docker://h.io/r@${digest}`, 'docker-daemon:x:y', 'docker-archive:/p.tar:n:t', 'oci:/d:t']) {
    assert.equal(formatReference(parseReference(text)), text);
  }
});

test('bad references give one clear message', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['ftp://host/x', /unknown transport "ftp:"/],
    ['dir:/tmp/x', /unknown transport "dir:"/],
    ['containers-storage:img', /unknown transport "containers-storage:"/],
    ['Host.io/UPPER:tag', /lowercase/],
    ['reg.io/repo:bad tag!', /not a valid tag/],
    ['reg.io/repo@sha256:123', /not a sha256 digest/],
    ['oci:', /missing path/],
    ['docker-archive:', /missing path/],
    ['host:5000:bad', /^invalid image reference "host:5000:bad": invalid reference format: "host:5000" is not HOST\[:PORT\]\/REPO/],
    ['docker://host.io:5000:bad', /invalid reference format: "host\.io:5000" is not HOST/],
    ['127.0.0.1:5000/repo:a:b', /invalid reference format: "127\.0\.0\.1:5000\/repo:a"/],
  ];
  for (const [input, message] of cases) {
    assert.throws(() => parseReference(input), (err: unknown) => err instanceof BuildfleetError && message.test(err.message) && !err.message.includes('\n'), input);
  }
});

test('loopback hosts', () => {
  assert.ok(isLoopbackHost('127.0.0.1:5000'));
  assert.ok(isLoopbackHost('localhost'));
  assert.ok(isLoopbackHost('[::1]:5000'));
  assert.ok(!isLoopbackHost('registry.example.com'));
  assert.ok(!isLoopbackHost('10.0.0.1:5000'));
});
