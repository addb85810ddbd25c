import type { Command } from 'commander';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { PoolSpec } from '../nodepool/pool-spec/pool-spec.js';
import { DEFAULT_DISK_SIZES } from '../nodepool/pool-spec/defaults.js';
import type { PoolManager, PoolView } from '../nodepool/pool.js';
import type { GkeApplyOptions } from '../nodepool/gke/apply.js';
import type { GkeProvider } from '../nodepool/gke/provider.js';
import { gkeStatusRows } from '../nodepool/gke/node-status.js';
import { describePlan, type PoolPlan } from '../nodepool/plan.js';
import { describeRoll } from '../nodepool/roll-plan.js';
import type { GlobalOptions } from './global-options.js';
import { printJson, table } from './output.js';
import { nonNegativeInt, positiveInt, transportOptions } from './options.js';
import { addInClusterOptions, runAgentCommand, type AgentRunFlags } from './agent.js';

type PoolFlags = { stateDir?: string };

/** Pool specs (and their YAML parser) load only for the commands that read one, not at every start. */
const poolSpecs = () => import('../nodepool/pool-spec/pool-spec.js');


function seconds(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new BuildfleetError('usage', `${flag} must be a number of seconds > 0, got "${value}"`);
  return n;
}

const secs = (ms: number | undefined) => (ms === undefined ? '-' : (ms / 1000).toFixed(2));

export function formatPoolStatus(view: PoolView): string {
  // GKE pools: Kubernetes' view of each node (Ready, cordoned, taints) beside buildfleet's conditions.
  const rows = view.provider === 'gke' ? gkeStatusRows(view.nodes) : [['NODE', 'PHASE', 'JOBS', 'RUNTIME s', 'PULL s', 'READY s', 'RUNTIME DISK', 'WORKLOAD DISK', 'PROBE']];
  for (const node of view.provider === 'gke' ? [] : view.nodes) {
    // Problem conditions, True while the problem exists (as node-problem-detector's).
    const disk = (type: string) => (node.conditions[type]?.status === 'True' ? 'Saturated' : 'ok');
    const runtime = node.conditions.RuntimeUnhealthy;
    const probe = runtime?.status === 'True' ? `failing: ${runtime.message}` : runtime?.status === 'False' ? 'healthy' : '-';
    rows.push([
      node.name,
      `${node.phase}${node.cordoned ? ',cordoned' : ''}${node.agentAlive ? '' : ',agent-down'}`,
      String(node.runningJobs),
      secs(node.phaseTimes.runtimeMs),
      secs(node.phaseTimes.pullMs),
      secs(node.phaseTimes.readyMs),
      disk('RuntimeDiskSaturated'),
      disk('WorkloadDiskSaturated'),
      probe,
    ]);
  }
  const ready = view.nodes.filter((node) => node.phase === 'Ready').length;
  return `pool ${view.name} (${view.provider}): ${ready}/${view.desiredNodes} nodes Ready; images: ${view.images.join(', ') || 'none'}\n` + (view.nodes.length ? table(rows) + '\n' : '');
}

/** GKE pools converge per node pool (nodepool/gke/apply.ts): no per-node plan, no registry call; --dry-run prints the API requests. */
async function applyGke(m: PoolManager, options: GlobalOptions, spec: PoolSpec, flags: GkeApplyOptions): Promise<void> {
  const [{ applyGkePool }, { formatWireRequests }] = await Promise.all([import('../nodepool/gke/apply.js'), import('../nodepool/gke/dry-run.js')]);
  const { plan, lines, requests } = await applyGkePool(m.store, m.providerFor('gke') as GkeProvider, spec, flags);
  const view = flags.dryRun ? undefined : await m.status(spec.name);
  if (options.json) return printJson({ dryRun: flags.dryRun === true, plan, steps: lines, ...(requests && { requests }), ...(view && { pool: view }) });
  if (options.quiet) return;
  process.stdout.write((flags.dryRun ? 'plan (dry run, nothing sent):\n' : 'applied:\n') + lines.map((line) => `  ${line}`).join('\n') + '\n');
  if (requests) process.stdout.write(requests.length ? `GKE API requests it would send, in order:\n${formatWireRequests(requests)}\n` : 'no GKE API request to send\n');
  if (view) process.stdout.write(formatPoolStatus(view));
}

export function registerPoolCommands(program: Command, globals: () => GlobalOptions): void {
  const pool = program
    .command('pool')
    .description('dual-disk node pools: each node has a runtime disk, a workload disk and its own Docker Engine; new nodes take jobs only once the build image is pulled')
    .option('--state-dir <dir>', 'where pools are recorded (default: $BUILDFLEET_STATE_DIR or /var/lib/buildfleet)');
  // The pool machinery (and dockerode with it) loads only when a pool command runs.
  const manager = async () => {
    const [{ StateStore, stateDirFrom }, { PoolManager }, { cliProviders }] = await Promise.all([import('../nodepool/state/store.js'), import('../nodepool/pool.js'), import('./providers.js')]);
    const options = globals();
    const store = new StateStore(stateDirFrom(pool.opts<PoolFlags>().stateDir));
    const log = options.json || options.quiet ? undefined : (line: string) => process.stderr.write(line + '\n');
    return { options, manager: new PoolManager(store, { registry: transportOptions(options).registry ?? {}, providers: cliProviders, ...(log && { log }) }), log };
  };
  const report = (options: GlobalOptions, plan: PoolPlan, spec: PoolSpec, view: PoolView | undefined, dryRun: boolean) => {
    if (options.json) return printJson({ dryRun, plan, ...(view && { pool: view }) });
    if (options.quiet) return;
    process.stdout.write((dryRun ? 'plan (dry run, nothing changed):\n' : 'applied:\n') + describePlan(plan, spec).map((line) => `  ${line}`).join('\n') + '\n');
    if (view) process.stdout.write(formatPoolStatus(view));
  };

  pool
    .command('bake')
    .description('bake the runtime disk that new nodes of a prepull.mode: preloaded-disk pool are cloned from (once per image digest; apply bakes it too when there is none)')
    .requiredOption('-f, --file <path>', 'pool spec (see nodepool/README.md)')
    .action(async (flags: { file: string }) => {
      const { options, manager: m } = await manager();
      const { loadPoolSpec } = await poolSpecs();
      const result = await m.preload(await loadPoolSpec(flags.file));
      if (options.json) printJson(result);
      else if (!options.quiet) process.stdout.write(`${result.made ? 'baked' : 'already baked'}: ${result.images.map((image) => image.pinned).join(', ')}${result.made ? ` in ${result.seconds.toFixed(1)} s` : ''}\n`);
    });

  pool
    .command('apply')
    .description('create or change a pool to match a spec file (YAML or JSON): adds, updates, drains and removes nodes; new images roll the nodes surge first, as pool roll')
    .requiredOption('-f, --file <path>', 'pool spec (see nodepool/README.md)')
    .option('--dry-run', 'print the plan and change nothing', false)
    .option('--no-wait', 'return once new nodes are provisioned, before they are Ready')
    .option('--timeout <seconds>', 'how long to wait for new nodes to be Ready', (v) => seconds(v, '--timeout'), 600)
    .option('--surge <n>', 'new images roll the nodes (as pool roll): new nodes made at a time, beyond the node count', (v) => positiveInt(v, '--surge'), 1)
    .action(async (flags: { file: string; dryRun: boolean; wait: boolean; timeout: number; surge: number }) => {
      const { options, manager: m } = await manager();
      const { loadPoolSpec } = await poolSpecs();
      const spec = await loadPoolSpec(flags.file);
      if (spec.provider === 'gke') return applyGke(m, options, spec, { dryRun: flags.dryRun, wait: flags.wait, timeoutMs: flags.timeout * 1000 });
      const { plan, pool: view } = await m.apply(spec, { dryRun: flags.dryRun, wait: flags.wait, timeoutMs: flags.timeout * 1000, surge: flags.surge });
      report(options, plan, spec, view, flags.dryRun);
    });

  pool
    .command('create')
    .description('create a new pool (fails if the name is taken), from a spec file or from flags')
    .argument('[name]', 'pool name (when no --file)')
    .option('-f, --file <path>', 'pool spec (YAML or JSON)')
    .option('--nodes <n>', 'node count', (v) => nonNegativeInt(v, '--nodes'), 1)
    .option('--runtime-disk <size>', 'runtime disk size per node, e.g. 20G', DEFAULT_DISK_SIZES.runtime)
    .option('--workload-disk <size>', 'workload disk size per node, e.g. 100G', DEFAULT_DISK_SIZES.workload)
    .option('--image <ref>', 'image to pre-pull (repeatable; the first is the build image)', (v: string, prev: string[] = []) => [...prev, v], [])
    .option('--no-wait', 'return once nodes are provisioned, before they are Ready')
    .option('--timeout <seconds>', 'how long to wait for nodes to be Ready', (v) => seconds(v, '--timeout'), 600)
    .action(async (name: string | undefined, flags: { file?: string; nodes: number; runtimeDisk: string; workloadDisk: string; image: string[]; wait: boolean; timeout: number }) => {
      const { options, manager: m } = await manager();
      if (!flags.file && !name) throw new BuildfleetError('usage', 'pool create: give a pool name or --file');
      if (!flags.file && flags.image.length === 0) throw new BuildfleetError('usage', 'pool create: give the build image with --image REF (nodes take jobs only once it is pulled)');
      const { loadPoolSpec, parsePoolSpec } = await poolSpecs();
      const spec = flags.file
        ? await loadPoolSpec(flags.file)
        : parsePoolSpec({ name, nodes: flags.nodes, disks: { runtime: flags.runtimeDisk, workload: flags.workloadDisk }, images: flags.image }, 'flags');
      if (spec.provider === 'gke') return applyGke(m, options, spec, { mustBeNew: true, wait: flags.wait, timeoutMs: flags.timeout * 1000 });
      const { plan, pool: view } = await m.apply(spec, { mustBeNew: true, wait: flags.wait, timeoutMs: flags.timeout * 1000 });
      report(options, plan, spec, view, false);
    });

  pool
    .command('resize')
    .description('change the node count: new nodes are Ready before the command returns; removed nodes are drained first')
    .argument('<name>', 'pool name')
    .requiredOption('--nodes <n>', 'new node count', (v) => nonNegativeInt(v, '--nodes'))
    .option('--no-wait', 'return once new nodes are provisioned')
    .option('--timeout <seconds>', 'how long to wait for new nodes to be Ready', (v) => seconds(v, '--timeout'), 600)
    .action(async (name: string, flags: { nodes: number; wait: boolean; timeout: number }) => {
      const { options, manager: m } = await manager();
      const record = await m.store.requirePool(name);
      if (record.spec.provider === 'gke') return applyGke(m, options, { ...record.spec, nodes: flags.nodes }, { wait: flags.wait, timeoutMs: flags.timeout * 1000 });
      const { plan, pool: view } = await m.resize(name, flags.nodes, { wait: flags.wait, timeoutMs: flags.timeout * 1000 });
      report(options, plan, { ...record.spec, nodes: flags.nodes }, view, false);
    });

  pool
    .command('roll')
    .description('roll a pool to new images, surge first: new nodes pre-pull the images by digest and are Ready before old nodes are cordoned, drained (running builds finish, up to the drain timeout) and deleted; never fewer Ready nodes than the spec asks. A new node that fails (e.g. its image cannot be pulled) stops the roll: it is removed, the old nodes keep serving, exit 8')
    .argument('<name>', 'pool name')
    .requiredOption('--image <ref>', 'the new image list (repeatable; the first is the build image); replaces the pool\'s images', (v: string, prev: string[] = []) => [...prev, v])
    .option('--surge <n>', 'new nodes made at a time, beyond the node count', (v) => positiveInt(v, '--surge'), 1)
    .option('--drain-timeout <seconds>', 'how long an old node\'s running builds may take to finish before it is deleted anyway (default: the spec\'s remediation.drainTimeoutSeconds)', (v) => seconds(v, '--drain-timeout'))
    .option('--dry-run', 'print the steps and change nothing', false)
    .option('--timeout <seconds>', 'how long new nodes have to become Ready', (v) => seconds(v, '--timeout'), 600)
    .action(async (name: string, flags: { image: string[]; surge: number; drainTimeout?: number; dryRun: boolean; timeout: number }) => {
      const { options, manager: m } = await manager();
      if ((await m.store.requirePool(name)).spec.provider === 'gke') {
        throw new BuildfleetError('unsupported', `pool roll: on GKE the nodes pull the images through the pre-pull DaemonSet: change images in the spec and run "buildfleet kube manifests -f SPEC | kubectl apply -f -"; a new secondary boot disk is "pool apply" (a rotation)`);
      }
      const rolled = await m.roll(name, flags.image, {
        surge: flags.surge,
        dryRun: flags.dryRun,
        timeoutMs: flags.timeout * 1000,
        ...(flags.drainTimeout !== undefined && { drainTimeoutSeconds: flags.drainTimeout }),
      });
      if (options.json) return printJson({ dryRun: flags.dryRun, pool: name, images: rolled.images, plan: rolled.plan, ...(rolled.result && { result: rolled.result }), ...(rolled.pool && { status: rolled.pool }) });
      if (options.quiet) return;
      const steps = describeRoll(rolled.plan, name).map((line) => `  ${line}`).join('\n');
      if (flags.dryRun) return void process.stdout.write(`roll plan (dry run, nothing changed), to ${rolled.images.map((image) => image.pinned).join(', ')}:\n${steps}\n`);
      const result = rolled.result!;
      process.stdout.write(`rolled pool ${name} to ${result.images.join(', ')} in ${result.seconds.toFixed(1)} s: created ${result.created.length}, removed ${result.removed.length} node(s)\n`);
      if (rolled.pool) process.stdout.write(formatPoolStatus(rolled.pool));
    });

  pool
    .command('status')
    .description('per-node phase, running jobs, phase times (runtime up, pull, ready), disk and probe conditions')
    .argument('[name]', 'pool name (default: every pool)')
    .action(async (name: string | undefined) => {
      const { options, manager: m } = await manager();
      const names = name !== undefined ? [name] : await m.store.listPools();
      const views: PoolView[] = [];
      for (const each of names) views.push(await m.status(each));
      if (options.json) return printJson(name !== undefined ? views[0] : views);
      process.stdout.write(views.length ? views.map(formatPoolStatus).join('\n') : `no pools in ${m.store.root}\n`);
    });

  pool
    .command('delete')
    .description('remove a pool: stops its agents, runtimes and containers, unmounts and detaches its disks, removes its files (also after a crash)')
    .argument('<name>', 'pool name')
    .action(async (name: string) => {
      const { options, manager: m } = await manager();
      const gke = (await m.store.readPool(name).catch(() => undefined))?.spec.provider === 'gke';
      const result = gke ? await (await import('../nodepool/gke/apply.js')).deleteGkePool(m.store, m.providerFor('gke') as GkeProvider, name) : await m.delete(name);
      if (options.json) return printJson({ pool: name, ...result });
      if (!options.quiet) process.stdout.write(`deleted pool ${name}: ${result.nodes} node(s); stopped ${result.processes} process(es), unmounted ${result.mounts} mount(s), detached ${result.loopDevices} loop device(s)\n`);
    });

  pool
    .command('exec')
    .description('run a build command in a container of the build image on a Ready, uncordoned node, with the workload disk as /workspace; exits with the command\'s code')
    .argument('<name>', 'pool name')
    .argument('<command...>', 'the command, after --')
    .option('--image <ref>', 'image to run instead of the pool\'s build image')
    .option('--wait <seconds>', 'how long to wait for a Ready node', (v) => seconds(v, '--wait'), 600)
    .action(async (name: string, command: string[], flags: { image?: string; wait: number }) => {
      const { options, manager: m, log } = await manager();
      const { execJob } = await import('../nodepool/jobs.js');
      const result = await execJob(m, name, command, {
        waitMs: flags.wait * 1000,
        ...(flags.image && { image: flags.image }),
        ...(log && { log }),
        // With --json, stdout carries only the result: the job's output goes to stderr.
        ...(options.json && { stdout: process.stderr }),
      });
      if (options.json) printJson(result);
      process.exitCode = result.exitCode;
    });
}

export function registerAgentCommand(program: Command): void {
  const agent = program.command('agent').description('the per-node agent: runtime, pre-pull gating, health probe, disk monitor, remediation, /metrics');
  const run = agent
    .command('run')
    .description('run the agent of one node until SIGTERM: a local node (--node-dir; the local provider starts one per node) or, with --in-cluster, the node a Kubernetes DaemonSet pod runs on')
    .option('--node-dir <dir>', 'the node\'s directory in the state dir');
  addInClusterOptions(run).action(async (flags: AgentRunFlags) => {
    await runAgentCommand(flags, program.opts<{ json?: boolean }>().json === true);
  });
}
