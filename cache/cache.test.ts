import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { errorReport, formatErrorReport } from '../cli/errors.js';
import { isBuildfleetError } from '../imagebuilder/errors.js';
import { RegistryClient } from '../imagebuilder/registry/index.js';
import type { RegistryServer } from '../nodepool/daemons/index.js';
import { FaultProxy } from '../test/helpers/registry-fakes.js';
import { testCliCommand, runCli, startRegistry, tempDir } from '../test/helpers/real.js';
import { ToolchainCache, type CacheOptions } from './cache.js';
import { registryTag, toolchainKey } from './key.js';

/**
 * The cache against a real registry (distribution 2.8): installs happen once per key, other
 * nodes download instead, a corrupt or half-made entry never counts, bad input is one line.
 */

let registry: RegistryServer;
let root: { path: string; remove(): Promise<void> };
let repo: string;
const caches: ToolchainCache[] = [];

before(async () => {
  [registry, root] = await Promise.all([startRegistry(), tempDir('buildfleet-cache-')]);
  repo = `127.0.0.1:${registry.port}/toolchains`;
});
after(async () => {
  await Promise.all(caches.map((cache) => cache.close()));
  await registry?.stop();
  await root?.remove();
});

let dirs = 0;
function newDir(): string {
  return join(root.path, `node${++dirs}`);
}

function open(options: Partial<CacheOptions> & { dir: string }): ToolchainCache {
  const cache = new ToolchainCache({ registry: repo, ...options });
  caches.push(cache);
  return cache;
}

/** An installer that appends a line to `counter` each run, then makes bin/TOOL and a few files; `extra` runs before it finishes. */
function installer(counter: string, extra = ''): string {
  return `echo run >> ${counter}; mkdir -p "$PREFIX/bin" "$PREFIX/lib"; printf '#!/bin/sh\\necho "$TOOL $VERSION"\\n' > "$PREFIX/bin/$TOOL"; chmod +x "$PREFIX/bin/$TOOL"; head -c 200000 /dev/urandom > "$PREFIX/lib/lib$TOOL.so"; ln -s "lib$TOOL.so" "$PREFIX/lib/libcurrent.so"; ${extra}`;
}

async function runs(counter: string): Promise<number> {
  const text = await readFile(counter, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).length;
}

async function leftovers(dir: string): Promise<string[]> {
  return readdir(join(dir, '.buildfleet', 'tmp')).catch(() => []);
}

test('concurrent gets of one key on one node install once; another node gets it from the registry without installing', { timeout: 60_000 }, async () => {
  const dir = newDir();
  const counter = join(root.path, 'once.count');
  const started = join(root.path, 'once.started');
  const key = toolchainKey('demo', '1.0.0');
  // A `buildfleet cache get` process installs; two gets in this process ask while it does.
  const cli = runCli(['--json', 'cache', 'get', 'demo', '1.0.0', '--dir', dir, '--registry', repo, '--installer', installer(counter, `touch ${started}; sleep 1`)]);
  while (!existsSync(started)) await sleep(20);
  const nodeA = [0, 1].map(() => open({ dir, installer: installer(counter) }));
  const waiting = await Promise.all(nodeA.map((cache) => cache.get(key)));
  const installedBy = await cli;
  assert.equal(installedBy.exitCode, 0, installedBy.stderr);
  const results = [JSON.parse(installedBy.stdout) as { path: string; source: string; digest?: string }, ...waiting];
  assert.equal(await runs(counter), 1, 'one install for three concurrent gets');
  assert.deepEqual(results.map((r) => r.source), ['installer', 'local', 'local']);
  const path = join(dir, 'demo', '1.0.0', 'x64');
  assert.ok(results.every((r) => r.path === path));
  assert.ok(existsSync(`${path}.complete`), 'the tool-cache marker beside the entry');
  assert.equal(await readdir(join(dir, '.buildfleet', 'locks')).then((l) => l.length), 0, 'no lock left');

  const nodeB = newDir();
  const other = open({ dir: nodeB, installer: installer(counter) });
  const pulled = await other.get(key);
  assert.equal(pulled.source, 'registry');
  assert.equal(await runs(counter), 1, 'the second node did not run the installer');
  assert.equal(pulled.digest, results.find((r) => r.source === 'installer')!.digest);
  assert.deepEqual(await readFile(join(pulled.path, 'lib', 'libdemo.so')), await readFile(join(path, 'lib', 'libdemo.so')));
  assert.equal((await other.get(key)).source, 'local');

  const listed = await other.list();
  assert.deepEqual(listed.map((e) => [e.tool, e.version, e.arch, e.source]), [['demo', '1.0.0', 'x64', 'registry']]);
  assert.ok(listed[0]!.size >= 200_000);
  const metrics = await other.metrics.registry.getMetricsAsJSON();
  const value = (name: string) => metrics.find((m) => m.name === name)?.values[0]?.value;
  assert.equal(value('buildfleet_cache_hits_total'), 1);
  assert.equal(value('buildfleet_cache_misses_total'), 1);
  assert.equal(value('buildfleet_cache_remote_hits_total'), 1);

  // The artifact as other OCI tools see it.
  const client = new RegistryClient(`127.0.0.1:${registry.port}`);
  try {
    const manifest = JSON.parse((await client.getManifest('toolchains', registryTag(key))).bytes.toString()) as Record<string, any>;
    assert.equal(manifest.artifactType, 'application/vnd.buildfleet.toolchain.v1');
    assert.equal(manifest.config.mediaType, 'application/vnd.oci.empty.v1+json');
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0].mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  } finally {
    await client.close();
  }
});

test('a corrupt local entry is detected and fetched again; --verify finds what the check set does not cover', { timeout: 60_000 }, async () => {
  const counter = join(root.path, 'corrupt.count');
  // 600 small files: more than the check set, so a removed small file can escape a plain hit.
  const many = 'mkdir -p "$PREFIX/share"; i=0; while [ $i -lt 600 ]; do echo $i > "$PREFIX/share/f$i"; i=$((i+1)); done';
  const key = toolchainKey('corrupt', '2.0.0');
  await open({ dir: newDir(), installer: installer(counter, many) }).get(key);
  const dir = newDir();
  const cache = open({ dir });
  const { path } = await cache.get(key);
  const good = await readFile(join(path, 'lib', 'libcorrupt.so'));

  await truncate(join(path, 'lib', 'libcorrupt.so'), 1000);
  const again = await cache.get(key);
  assert.equal(again.source, 'registry', 'a truncated library is noticed on a plain get');
  assert.deepEqual(await readFile(join(path, 'lib', 'libcorrupt.so')), good);

  await writeFile(join(path, 'bin', 'corrupt'), 'tampered\n');
  assert.equal((await cache.get(key)).source, 'registry', 'a rewritten file is noticed');

  const lookup = cache.store.lookup(key);
  assert.equal(lookup.state, 'hit');
  const record = lookup.state === 'hit' ? lookup.record : undefined;
  const unchecked = Array.from({ length: 600 }, (_, i) => `share/f${i}`).find((f) => !record!.check.some(([p]) => p === f))!;
  await rm(join(path, unchecked));
  assert.equal((await cache.get(key)).source, 'local', 'outside the check set a plain hit does not look');
  const verified = await cache.get(key, { verify: true });
  assert.equal(verified.source, 'registry');
  assert.ok(existsSync(join(path, unchecked)));
  assert.equal(await runs(counter), 1);
  assert.deepEqual(await leftovers(dir), []);
});

test('a pulled blob that does not match its digest is not published', { timeout: 60_000 }, async () => {
  const counter = join(root.path, 'digest.count');
  const key = toolchainKey('digest', '1.0.0');
  await open({ dir: newDir(), installer: installer(counter) }).get(key);
  const proxy = await FaultProxy.start(registry.port);
  try {
    proxy.inject({ corruptAt: 5000 }, 10, (method, url) => method === 'GET' && url.includes('/blobs/'));
    const dir = newDir();
    const cache = open({ dir, registry: `${proxy.host}/toolchains`, registryOptions: { retries: 0 } });
    await assert.rejects(cache.get(key), (err) => isBuildfleetError(err) && ['integrity', 'format'].includes(err.kind));
    assert.equal(existsSync(join(dir, 'digest', '1.0.0', 'x64.complete')), false);
    assert.equal(existsSync(join(dir, 'digest', '1.0.0', 'x64')), false);
    assert.deepEqual(await leftovers(dir), []);
  } finally {
    await proxy.stop();
  }
});

test('an installer killed mid-way leaves no entry and no marker; the next get installs', { timeout: 60_000 }, async () => {
  const dir = newDir();
  const counter = join(root.path, 'killed.count');
  const pidFile = join(root.path, 'installer.pid');
  const key = toolchainKey('killed', '1.0.0');
  const cache = open({ dir, installer: installer(counter, `echo $$ > ${pidFile}; sleep 30`) });
  const pending = cache.get(key);
  while (!existsSync(pidFile)) await sleep(20);
  process.kill(Number(await readFile(pidFile, 'utf8')), 'SIGKILL');
  await assert.rejects(pending, /installer for killed 1\.0\.0 was killed by SIGKILL/);
  assert.equal(existsSync(join(dir, 'killed', '1.0.0', 'x64')), false);
  assert.equal(existsSync(join(dir, 'killed', '1.0.0', 'x64.complete')), false);
  assert.deepEqual(await leftovers(dir), []);
  const ok = await cache.get(key, { installer: installer(counter) });
  assert.equal(ok.source, 'installer');
});

test('a `buildfleet cache get` killed mid-install: its lock is broken, its work swept, nothing half-published', { timeout: 60_000 }, async () => {
  const dir = newDir();
  const counter = join(root.path, 'crash.count');
  const started = join(root.path, 'crash.started');
  const args = [...testCliCommand(), 'cache', 'get', 'crash', '1.0.0', '--dir', dir, '--registry', repo, '--installer', installer(counter, `touch ${started}; sleep 30`)];
  const child = spawn(process.execPath, args, { detached: true, stdio: 'ignore' });
  try {
    const deadline = Date.now() + 30_000;
    while (!existsSync(started) && Date.now() < deadline) await sleep(50);
    assert.ok(existsSync(started), 'the installer started');
  } finally {
    // The whole process group, as an OOM kill or a node crash would.
    process.kill(-child.pid!, 'SIGKILL');
  }
  await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
  assert.equal(existsSync(join(dir, 'crash', '1.0.0', 'x64.complete')), false);
  assert.equal(existsSync(join(dir, 'crash', '1.0.0', 'x64')), false);
  assert.equal((await leftovers(dir)).length, 1, 'the dead process left its work directory');
  assert.equal((await readdir(join(dir, '.buildfleet', 'locks'))).length, 1, 'and its lock');

  const result = await open({ dir, installer: installer(counter) }).get(toolchainKey('crash', '1.0.0'));
  assert.equal(result.source, 'installer');
  assert.deepEqual(await leftovers(dir), [], 'the dead work directory was swept');
  assert.equal(await runs(counter), 2);
});

/** What the CLI prints for an error and the exit code it gives (cli/errors.ts), without starting a process per case. */
function cliReport(err: unknown): { line: string; exitCode: number } {
  const report = errorReport(err, 'buildfleet cache get')!;
  return { line: formatErrorReport(report, false), exitCode: report.exitCode };
}

test('bad input: one clear line each, a non-zero exit, nothing published', { timeout: 60_000 }, async () => {
  const dir = newDir();
  // One case through the real CLI (a process of its own), the others in-process, meanwhile.
  const unknownRun = runCli(['cache', 'get', 'nosuch', '1.0', '--dir', dir, '--registry', repo]);

  const failing = open({ dir, registry: undefined, installer: 'echo fetching; echo "no such version" >&2; exit 3' });
  const failed = await failing.get(toolchainKey('broken', '1.0')).then(() => undefined, cliReport);
  assert.deepEqual(failed, { line: 'buildfleet: error: installer for broken 1.0 failed with exit code 3: no such version\n', exitCode: 8 });
  assert.equal(existsSync(join(dir, 'broken')), false);

  assert.deepEqual(cliReportOf(() => toolchainKey('../etc', '1.0')), { line: 'buildfleet: error: invalid tool name "../etc": lower-case letters, digits, \'.\', \'_\' and \'-\', starting with a letter or digit\n', exitCode: 2 });

  const proxy = await FaultProxy.start(registry.port);
  try {
    proxy.inject({ status: 403 }, 100, (method) => method === 'POST' || method === 'PUT');
    const refused = open({ dir, registry: `${proxy.host}/toolchains`, installer: installer(join(root.path, 'refused.count')) });
    const report = await refused.get(toolchainKey('refused', '1.0.0')).then(() => undefined, cliReport);
    assert.ok(report && report.exitCode !== 0 && report.exitCode !== 70, 'a BuildfleetError, not a crash');
    assert.match(report.line, /^buildfleet: error: [^\n]*toolchains[^\n]*\n$/);
    assert.equal(existsSync(join(dir, 'refused')), false, 'not kept locally either');
    assert.deepEqual(await leftovers(dir), []);
  } finally {
    await proxy.stop();
  }

  const unknown = await unknownRun;
  assert.equal(unknown.exitCode, 3);
  assert.match(unknown.stderr, /^buildfleet: error: nosuch 1\.0 \(linux\/amd64, glibc\) is not in the local cache or 127\.0\.0\.1:\d+\/toolchains:nosuch-1\.0-linux-amd64-glibc, and no --installer was given to make it$/);
  assert.equal(unknown.stdout, '');
});

function cliReportOf(run: () => unknown): { line: string; exitCode: number } | undefined {
  try {
    run();
    return undefined;
  } catch (err) {
    return cliReport(err);
  }
}

/** The CLI's program in this process (no start-up per call): stdout captured, the exit code returned. */
async function runProgram(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const { main } = await import('../cli/program.js');
  const out = { stdout: '', stderr: '' };
  const writes = { stdout: process.stdout.write, stderr: process.stderr.write };
  for (const name of ['stdout', 'stderr'] as const) {
    process[name].write = ((chunk: string | Uint8Array) => ((out[name] += chunk.toString()), true)) as typeof process.stdout.write;
  }
  try {
    const exitCode = await main(['node', 'buildfleet', ...args]);
    return { exitCode, ...out };
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
    process.exitCode = undefined;
  }
}

test('cache ls, put and gc through the CLI program', { timeout: 60_000 }, async () => {
  const dir = newDir();
  const local = open({ dir, registry: undefined, installer: installer(join(root.path, 'ls.count')) });
  await local.get(toolchainKey('alpha', '1.2.0'));
  await sleep(15);
  await local.get(toolchainKey('beta', '0.9'));

  const listed = await runProgram(['--json', 'cache', 'ls', '--dir', dir]);
  assert.equal(listed.exitCode, 0);
  const entries = JSON.parse(listed.stdout) as Array<{ tool: string; version: string; arch: string; size: number; lastUsed: string; source: string }>;
  assert.deepEqual(entries.map((e) => [e.tool, e.version, e.arch, e.source]), [['alpha', '1.2.0', 'x64', 'installer'], ['beta', '0.9', 'x64', 'installer']]);
  assert.ok(entries.every((e) => e.size > 200_000 && !Number.isNaN(Date.parse(e.lastUsed))));
  const text = await runProgram(['cache', 'ls', '--dir', dir]);
  assert.match(text.stdout, /^TOOL +VERSION +ARCH +SIZE +LAST USED \(UTC\) +SOURCE\nalpha +1\.2\.0 +x64 +\d/);

  // put: an existing tree (here: beta's) pushed under another version; a node without it pulls it.
  const put = await runProgram(['cache', 'put', 'beta', '1.0', join(dir, 'beta', '0.9', 'x64'), '--dir', dir, '--registry', repo]);
  assert.equal(put.exitCode, 0, put.stderr);
  assert.match(put.stdout, /^127\.0\.0\.1:\d+\/toolchains:beta-1\.0-linux-amd64-glibc@sha256:[a-f0-9]{64} \(\d+(\.\d)? KB\)\n$/);
  const pulled = await open({ dir: newDir() }).get(toolchainKey('beta', '1.0'));
  assert.equal(pulled.source, 'registry');
  assert.deepEqual(await readFile(join(pulled.path, 'lib', 'libbeta.so')), await readFile(join(dir, 'beta', '0.9', 'x64', 'lib', 'libbeta.so')));
  assert.equal((await runProgram(['cache', 'put', 'beta', '1.0', join(dir, 'nothing'), '--dir', dir, '--registry', repo])).exitCode, 2);

  const gc = await runProgram(['--json', 'cache', 'gc', '--dir', dir, '--max-size', '300K']);
  assert.equal(gc.exitCode, 0);
  assert.deepEqual((JSON.parse(gc.stdout) as { removed: Array<{ path: string }> }).removed.map((r) => r.path), [join(dir, 'alpha', '1.2.0', 'x64')]);
  assert.deepEqual(await runProgram(['cache', 'gc', '--dir', dir]), { exitCode: 2, stdout: '', stderr: 'buildfleet: error: cache gc needs --max-size or --min-free\n' });
  assert.deepEqual(await runProgram(['cache', 'gc', '--dir', dir, '--max-size', 'lots']), { exitCode: 2, stdout: '', stderr: 'buildfleet: error: --max-size must be a size such as 500M, 2G or 1073741824, not "lots"\n' });
});
