import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { stringify } from 'yaml';
import { startPoolFixture, type PoolFixture } from '../test/helpers/pools.js';
import { runCli } from '../test/helpers/real.js';
import { isAlive } from './local/processes.js';
import { inCgroup, nodeCgroupsBelow, nodeDaemonsCgroupName } from './local/cgroups.js';
import { PoolManager } from './pool.js';
import { StateStore } from './state/store.js';
import { ownedTempName } from '../imagebuilder/transports/temp-files.js';

/**
 * Pool and node names are paths' last parts: no name may make a command act outside
 * `<state-dir>/pools/`, and no command may signal a process that its pool did not start.
 * The state dir sits two levels down in a dir of its own, so `../..` points at something this
 * test owns (and watches) rather than at /tmp.
 */

let fixture: PoolFixture;
let base: string;
let stateDir: string;
let manager: PoolManager;
let bystander: ChildProcess | undefined;
const signalsFile = () => join(base, 'bystander-signals');

before(async () => {
  fixture = await startPoolFixture();
  base = await mkdtemp('/tmp/bf-names-');
  stateDir = join(base, 'state');
  await mkdir(join(stateDir, 'pools'), { recursive: true });
  manager = new PoolManager(new StateStore(stateDir));
});

after(async () => {
  bystander?.kill('SIGKILL');
  for (const pool of await manager?.store.listPools() ?? []) await manager.delete(pool).catch(() => {});
  await fixture?.stop();
  if (base) await rm(base, { recursive: true, force: true });
});

/**
 * A process that is no pool's, whose command line names the given dirs (what the old sweep
 * matched on): it records every catchable signal it gets, and dies only by SIGKILL.
 */
function startBystander(...dirs: string[]): ChildProcess {
  const script = `trap 'echo TERM >> ${signalsFile()}' TERM; trap 'echo INT >> ${signalsFile()}' INT; trap 'echo HUP >> ${signalsFile()}' HUP; while :; do sleep 0.2; done`;
  const child = spawn('bash', ['-c', script, ...dirs], { stdio: 'ignore', detached: true });
  child.unref();
  return child;
}

/** Every path below dir with its type, mode, size and content digest (links: their target). */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (path: string): Promise<void> => {
    for (const name of await readdir(path)) {
      const full = join(path, name);
      const info = await lstat(full);
      if (info.isDirectory()) {
        out[full] = `dir ${info.mode}`;
        await walk(full);
      } else if (info.isSymbolicLink()) out[full] = `link ${await readlink(full)}`;
      else out[full] = `file ${info.mode} ${info.size} ${createHash('sha256').update(await readFile(full)).digest('hex')} ${info.mtimeMs}`;
    }
  };
  await walk(dir);
  return out;
}

const HOSTILE_NAMES = ['../..', '..', '.', '', 'a/b', '/etc', 'ci\nx'];

test('no pool command acts outside the state dir, whatever the name', { timeout: 600_000 }, async () => {
  const cli = (args: string[]) => runCli(args, { BUILDFLEET_STATE_DIR: stateDir });
  // What a careless delete would take: a pool of its own, files beside the state dir, an absolute target.
  const created = await cli(['pool', 'create', 'good', '--nodes', '0', '--image', fixture.image]);
  assert.equal(created.exitCode, 0, created.stderr);
  await mkdir(join(base, 'keep'), { recursive: true });
  await writeFile(join(base, 'keep', 'f'), 'x\n');
  // A dir shaped like a node dir, outside any pools/ dir: an agent must not take it for one.
  const fakeNode = join(base, 'fake', 'nodes', 'n1');
  await mkdir(fakeNode, { recursive: true });
  await writeFile(join(fakeNode, 'node.json'), await readFile(join(stateDir, 'pools', 'good', 'pool.json')));
  const specs: string[] = [];
  for (const [i, name] of HOSTILE_NAMES.entries()) {
    specs.push(join(base, `spec-${i}.yaml`));
    await writeFile(specs[i]!, stringify({ name, nodes: 1, images: [fixture.image] }));
  }
  bystander = startBystander(base, stateDir, join(stateDir, 'pools'), join(base, 'm'));
  await new Promise((resolve) => setTimeout(resolve, 300)); // its traps are set
  const before = await snapshot(base);

  const runs: Array<{ args: string[]; exitCode: number; stderr: string }> = [];
  const limit = pLimit(4);
  const commands = HOSTILE_NAMES.flatMap((name, i) => [
    ['pool', 'delete', name],
    ['pool', 'status', name],
    ['pool', 'exec', name, '--wait', '1', '--', 'true'],
    ['pool', 'resize', name, '--nodes', '1'],
    ['pool', 'roll', name, '--image', fixture.image],
    ['pool', 'create', name, '--nodes', '1', '--image', fixture.image],
    ['pool', 'apply', '-f', specs[i]!],
    ['pool', 'apply', '--dry-run', '-f', specs[i]!],
    ['agent', 'run', '--node-dir', join(stateDir, 'pools', name, 'nodes', 'n1')],
    ['agent', 'run', '--node-dir', name || '.'],
  ]);
  commands.push(['agent', 'run', '--node-dir', fakeNode], ['agent', 'run', '--node-dir', base]);
  await Promise.all(commands.map((args) => limit(async () => runs.push({ args, ...(await cli(args)) }))));

  for (const run of runs) {
    const label = JSON.stringify(run.args);
    assert.notEqual(run.exitCode, 0, `${label} must fail`);
    assert.ok([2, 3].includes(run.exitCode), `${label}: exit ${run.exitCode}: ${run.stderr}`);
    assert.equal(run.stderr.trim().split('\n').length, 1, `${label}: one line, got: ${run.stderr}`);
    assert.doesNotMatch(run.stderr, /pool delete/, `${label} suggests no delete`);
  }
  assert.deepEqual(await snapshot(base), before, 'nothing in or beside the state dir changed');
  assert.ok(isAlive(bystander.pid!), 'the bystander process is alive');
  assert.equal(existsSync(signalsFile()), false, `the bystander got no signal: ${await readFile(signalsFile(), 'utf8').catch(() => '')}`);
  assert.deepEqual(await manager.store.listPools(), ['good']);
});

test('delete stops exactly the processes its pool started', { timeout: 300_000 }, async () => {
  const cli = (args: string[]) => runCli(args, { BUILDFLEET_STATE_DIR: stateDir });
  const created = await cli(['pool', 'create', 'sweep', '--nodes', '1', '--runtime-disk', '512M', '--workload-disk', '256M', '--image', fixture.image]);
  assert.equal(created.exitCode, 0, created.stderr);
  const nodeDir = manager.store.nodeDir('sweep', 'n1');
  const agentPid = Number((await readFile(join(nodeDir, 'run', 'agent.pid'), 'utf8')).trim());
  const dockerdPid = Number((await readFile(join(nodeDir, 'run', 'docker.pid'), 'utf8')).trim());
  const daemonsCgroup = nodeDaemonsCgroupName(nodeDir);
  for (const pid of [agentPid, dockerdPid]) assert.ok(await inCgroup(daemonsCgroup, pid), `pid ${pid} is in the node's cgroup`);
  // Names the node dir on its command line, as the node's own daemons do, but is no part of the node.
  const lookalike = startBystander(nodeDir, join(nodeDir, 'run', 'docker.sock'));
  try {
    // An agent killed outright (as a crash would) cannot stop its daemons: the cgroup finds them.
    process.kill(agentPid, 'SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const deleted = await cli(['--json', 'pool', 'delete', 'sweep']);
    assert.equal(deleted.exitCode, 0, deleted.stderr);
    const report = JSON.parse(deleted.stdout) as { processes: number };
    assert.ok(report.processes >= 2, `containerd and dockerd were killed: ${deleted.stdout}`);
    assert.equal(isAlive(agentPid), false, 'the agent is gone');
    assert.equal(isAlive(dockerdPid), false, 'the node\'s dockerd is gone');
    assert.ok(isAlive(lookalike.pid!), 'a process that merely names the node dir is left alone');
    assert.equal(existsSync(signalsFile()), false, 'and got no signal');
    assert.equal(existsSync(manager.store.poolDir('sweep')), false);
    assert.deepEqual(await nodeCgroupsBelow(nodeDir), [], 'no cgroup of the node is left on the host');
  } finally {
    lookalike.kill('SIGKILL');
  }
});

test('delete refuses a dir that holds no pool record, and leaves it as it is', { timeout: 60_000 }, async () => {
  const cli = (args: string[]) => runCli(args, { BUILDFLEET_STATE_DIR: stateDir });
  const stray = join(stateDir, 'pools', 'stray');
  await mkdir(join(stray, 'nodes', 'n1'), { recursive: true });
  await writeFile(join(stray, 'nodes', 'n1', 'precious'), 'keep me\n');
  const before = await snapshot(stray);
  for (const command of [['pool', 'delete', 'stray'], ['pool', 'status', 'stray']]) {
    const result = await cli(command);
    assert.equal(result.exitCode, 9, result.stderr);
    assert.match(result.stderr.trim(), /^buildfleet: error: .*pools\/stray holds no pool\.json.*left as it is/);
    assert.equal(result.stderr.trim().split('\n').length, 1);
  }
  assert.deepEqual(await snapshot(stray), before);
  await rm(stray, { recursive: true });
});

test('a claim left by a killed claimer is swept by the next claim; a live one is left alone', { timeout: 120_000 }, async () => {
  const cli = (args: string[]) => runCli(args, { BUILDFLEET_STATE_DIR: stateDir });
  const dead = spawn('true');
  await new Promise((resolve) => dead.once('exit', resolve));
  const stale = join(stateDir, 'pools', ownedTempName('.claim-stale-', dead.pid));
  const live = join(stateDir, 'pools', ownedTempName('.claim-live-', process.pid));
  for (const claim of [stale, live]) await mkdir(join(claim, 'nodes'), { recursive: true });
  const created = await cli(['pool', 'create', 'claims', '--nodes', '0', '--image', fixture.image]);
  assert.equal(created.exitCode, 0, created.stderr);
  assert.equal(existsSync(stale), false, 'the dead claimer\'s claim is gone');
  assert.equal(existsSync(live), true, 'a live claimer\'s claim stays');
  assert.ok((await manager.store.listPools()).includes('claims'));
  await rm(live, { recursive: true });
  await manager.delete('claims');
});
