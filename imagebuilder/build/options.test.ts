import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BuildfleetError, exitCodeFor } from '../errors.js';
import { buildTarget, parseBuildArgs, parseLabels } from './options.js';

const usage = (pattern: RegExp) => (err: unknown) => err instanceof BuildfleetError && exitCodeFor[err.kind] === 2 && pattern.test(err.message);

test('build args: NAME=VALUE, or NAME from the environment (left out when unset), as the docker CLI', () => {
  assert.deepEqual(parseBuildArgs(['A=1', 'B=x=y', 'EMPTY=', 'FROM_ENV', 'UNSET'], { FROM_ENV: 'e' }), { A: '1', B: 'x=y', EMPTY: '', FROM_ENV: 'e' });
  assert.throws(() => parseBuildArgs(['=1'], {}), usage(/--build-arg =1: expected NAME=VALUE/));
  assert.throws(() => parseBuildArgs(['1A=1'], {}), usage(/expected NAME=VALUE/));
});

test('labels: KEY=VALUE, a bare KEY is an empty label', () => {
  assert.deepEqual(parseLabels(['org.x=1', 'flag', 'a=b=c']), { 'org.x': '1', flag: '', a: 'b=c' });
  assert.throws(() => parseLabels(['=v']), usage(/--label =v: expected KEY=VALUE/));
});

test('the tag: a registry reference is tagged by that name in the engine and pushed there', () => {
  const target = buildTarget('127.0.0.1:5000/ci/build:v1', true);
  assert.equal(target.engineTag, '127.0.0.1:5000/ci/build:v1');
  assert.deepEqual(target.registry, { transport: 'registry', registry: '127.0.0.1:5000', repository: 'ci/build', tag: 'v1' });
  assert.deepEqual(target.daemon, { transport: 'docker-daemon', name: '127.0.0.1:5000/ci/build', tag: 'v1' });
  assert.equal(buildTarget('registry.example/x', false).engineTag, 'registry.example/x:latest');
  assert.equal(buildTarget('docker-daemon:local/build:dev', false).engineTag, 'local/build:dev');
});

test('the tag: no digest, no push to a daemon, no other transport', () => {
  assert.throws(() => buildTarget(`reg.example/x@sha256:${'a'.repeat(64)}`, true), usage(/name a tag, not a digest/));
  assert.throws(() => buildTarget('docker-daemon:local/build:dev', true), usage(/--push needs a registry --tag/));
  assert.throws(() => buildTarget('oci:/tmp/layout:v1', false), usage(/expected HOST\/REPO:TAG/));
  assert.throws(() => buildTarget('Not A Reference', false), (err: unknown) => err instanceof BuildfleetError && exitCodeFor[err.kind] === 2);
});
