import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkPoolName, loadPoolSpec, parsePoolSpec, parseSize } from './pool-spec.js';

const images = ['127.0.0.1:5000/build:1'];
import { phaseTimes, transition } from '../state/lifecycle.js';

test('sizes: bytes or K/M/G/T in powers of 1024', () => {
  assert.equal(parseSize('512M'), 512 * 1024 ** 2);
  assert.equal(parseSize('1.5g'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('20GiB'), 20 * 1024 ** 3);
  assert.equal(parseSize(4096), 4096);
  assert.equal(parseSize('lots'), undefined);
  assert.equal(parseSize('0'), undefined);
});

test('defaults fill everything but the name and node count', () => {
  const spec = parsePoolSpec({ name: 'ci', nodes: 2, disks: { runtime: '1G' }, images });
  assert.equal(spec.provider, 'local');
  assert.equal(spec.disks.runtime.size, 1024 ** 3);
  assert.equal(spec.disks.workload.size, 8 * 1024 ** 3);
  assert.deepEqual(spec.probe, { intervalSeconds: 10, timeoutSeconds: 10, failureThreshold: 3 });
  assert.equal(spec.remediation.policy, 'drain-then-restart');
  assert.equal(spec.liveRestore, true);
});

test('a bad spec fails with one line naming the field', () => {
  const cases: Array<[object, RegExp]> = [
    [{ images, name: 'ci', nodes: 1, disks: { runtime: 'lots' } }, /^pool spec: disks\.runtime\.size: not a size: "lots"/],
    [{ images, name: 'ci', nodes: 1, disks: { workload: { size: '10M' } } }, /^pool spec: disks\.workload\.size: must be at least 64M/],
    [{ images, name: 'CI', nodes: 1 }, /^pool spec: name: lowercase/],
    [{ images, name: 'ci', nodes: -1 }, /^pool spec: nodes: /],
    [{ images, name: 'ci' }, /^pool spec: nodes: /],
    [{ images, name: 'ci', nodes: 1, probe: { failureThreshold: 0 } }, /^pool spec: probe\.failureThreshold: /],
    [{ images, name: 'ci', nodes: 1, saturation: { utilization: 0.5, clearUtilization: 0.8 } }, /^pool spec: saturation\.clearUtilization: must not exceed utilization/],
    [{ images, name: 'ci', nodes: 1, remediation: { policy: 'reboot' } }, /^pool spec: remediation\.policy: /],
    [{ images, name: 'ci', nodes: 1, nodez: 2 }, /^pool spec: \(top level\): Unrecognized key: "nodez"/],
    [{ images, name: 'ci', nodes: 1, disks: { runtime: '99999999T' } }, /^pool spec: disks\.runtime\.size: must be at most 64T/],
    [{ images, name: 'ci', nodes: 1, disks: { workload: { size: '65T' } } }, /^pool spec: disks\.workload\.size: must be at most 64T/],
    [{ name: 'ci', nodes: 1 }, /^pool spec: images: /],
    [{ images: [], name: 'ci', nodes: 1 }, /^pool spec: images: give at least one image/],
    [{ images, name: '../..', nodes: 1 }, /^pool spec: name: lowercase/],
  ];
  for (const [input, message] of cases) {
    assert.throws(() => parsePoolSpec(input), (err: Error & { kind?: string }) => {
      assert.match(err.message, message);
      assert.equal(err.message.includes('\n'), false);
      assert.equal(err.kind, 'usage');
      return true;
    });
  }
});

test('spec files: YAML or JSON; unreadable or invalid files name the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'buildfleet-spec-'));
  try {
    await writeFile(join(dir, 'pool.yaml'), 'name: ci\nnodes: 3\ndisks:\n  runtime: 2G\n  workload: 10G\nimages: [127.0.0.1:5000/build:1]\n');
    const spec = await loadPoolSpec(join(dir, 'pool.yaml'));
    assert.equal(spec.nodes, 3);
    assert.deepEqual(spec.images, ['127.0.0.1:5000/build:1']);
    await writeFile(join(dir, 'pool.json'), JSON.stringify({ name: 'ci', nodes: 1, images }));
    assert.equal((await loadPoolSpec(join(dir, 'pool.json'))).nodes, 1);
    await writeFile(join(dir, 'bad.yaml'), 'name: ci\nnodes: [\n');
    await assert.rejects(loadPoolSpec(join(dir, 'bad.yaml')), /bad\.yaml: not valid YAML or JSON/);
    await assert.rejects(loadPoolSpec(join(dir, 'missing.yaml')), /missing\.yaml: cannot read pool spec \(ENOENT\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('lifecycle: transitions are checked and timestamped; phase times come from the first start', () => {
  let history = transition([], 'Provisioning', new Date(1000));
  history = transition(history, 'RuntimeReady', new Date(2500));
  history = transition(history, 'Pulling', new Date(2600));
  history = transition(history, 'Ready', new Date(9000));
  assert.throws(() => transition(history, 'Draining', new Date(9100)), /Ready -> Draining is not allowed/);
  history = transition(history, 'Unhealthy', new Date(10_000), 'probe');
  history = transition(history, 'Cordoned', new Date(10_100));
  history = transition(history, 'Draining', new Date(10_200));
  history = transition(history, 'RuntimeReady', new Date(11_000));
  history = transition(history, 'Pulling', new Date(11_100));
  history = transition(history, 'Ready', new Date(11_200));
  history = transition(history, 'Removing', new Date(12_000));
  assert.deepEqual(phaseTimes(history), { runtimeMs: 1500, pullMs: 6500, readyMs: 8000 });
  assert.equal(history[4]!.reason, 'probe');
});

test('pool names that could reach a path are refused, each in one line', () => {
  assert.equal(checkPoolName('ci-2'), 'ci-2');
  for (const name of ['../..', '..', '.', '', 'a/b', '/etc', 'ci\nx', 'CI', 'a', '-a', 'a-', 'x'.repeat(33)]) {
    assert.throws(() => checkPoolName(name), (err: Error & { kind?: string }) => {
      assert.equal(err.kind, 'usage');
      assert.equal(err.message.includes('\n'), false);
      assert.match(err.message, /is not a pool name/);
      return true;
    });
  }
});

test('cache: a registry repository, a size limit, declared toolchains; bad values name the field', () => {
  const spec = parsePoolSpec({ name: 'ci', nodes: 1, images, cache: { registry: '127.0.0.1:5000/ci/toolchains', maxSize: '20G', toolchains: ['node@20.11.0'] } });
  assert.deepEqual(spec.cache, { registry: '127.0.0.1:5000/ci/toolchains', maxSize: 20 * 1024 ** 3, minFreeRatio: 0.1, dir: 'toolcache', toolchains: ['node@20.11.0'] });
  assert.equal(parsePoolSpec({ name: 'ci', nodes: 1, images }).cache, undefined);
  const cases: Array<[object, RegExp]> = [
    [{ maxSize: '1G', toolchains: ['node 20'] }, /^pool spec: cache\.toolchains\.0: TOOL@VERSION/],
    [{ maxSize: 'big' }, /^pool spec: cache\.maxSize: not a size/],
    [{}, /^pool spec: cache\.maxSize: /],
    [{ maxSize: '1G', registry: 'no-repo' }, /^pool spec: cache\.registry: HOST\/REPOSITORY/],
    [{ maxSize: '1G', dir: '../x' }, /^pool spec: cache\.dir: /],
  ];
  for (const [cache, message] of cases) assert.throws(() => parsePoolSpec({ name: 'ci', nodes: 1, images, cache }), (err: Error) => message.test(err.message));
});
