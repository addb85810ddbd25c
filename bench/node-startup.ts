import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { RegistryServer } from '../nodepool/daemons/index.js';
import { openDestination } from '../imagebuilder/transports/index.js';
import { parsePoolSpec } from '../nodepool/pool-spec/pool-spec.js';
import { StateStore } from '../nodepool/state/store.js';
import { PoolManager } from '../nodepool/pool.js';
import { phaseTimes } from '../nodepool/state/lifecycle.js';
import { writeRunnableImage } from './runnable-image.js';
import { markdownTable, median, seconds } from './stats.js';

/**
 * How fast a cold local node is up, and what its agent costs: for each run a fresh one-node
 * pool (new disks, new containerd and dockerd, nothing cached), split into phases from the
 * node's own timestamped transitions; then the agent's CPU time over an idle stretch at the
 * default probe interval. Targets: disks and runtime up in under 2 s before the pull
 * starts; the agent under 1% of one core.
 */

const usage = `usage: node dist/bench/node-startup.js [--runs N] [--image-mb MB] [--idle SECONDS]
  --runs N          cold nodes to start, one after the other (default 5)
  --image-mb MB     data in the pre-pulled image, on top of its busybox base (default 64)
  --idle SECONDS    how long to measure the agent's CPU at the default probe interval (default 60)`;

type Run = { disksAndAgentMs: number; runtimeMs: number; upMs: number; pullMs: number; readyMs: number };

function clockTicks(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, 'image-mb': { type: 'string', default: '64' }, idle: { type: 'string', default: '60' }, help: { type: 'boolean', default: false } } });
  if (values.help) return void process.stdout.write(usage + '\n');
  const runs = Number(values.runs);
  const imageMb = Number(values['image-mb']);
  const idleSeconds = Number(values.idle);
  if (process.getuid?.() !== 0) throw new Error('needs root (loop devices, mounts, dockerd)');

  const stateDir = await mkdtemp('/tmp/bf-bench-');
  const registry = await RegistryServer.start();
  const manager = new PoolManager(new StateStore(stateDir));
  const results: Run[] = [];
  try {
    const image = `${registry.host}/bench/build:1`;
    const layers = Math.max(1, Math.round(imageMb / 16));
    await writeRunnableImage(await openDestination(image), { dataLayers: layers, layerBytes: Math.round((imageMb * 1024 * 1024) / layers), seed: 'node-startup' });
    for (let run = 1; run <= runs; run++) {
      const name = `startup${run}`;
      const spec = parsePoolSpec({ name, nodes: 1, disks: { runtime: '2G', workload: '1G' }, images: [image] });
      await manager.apply(spec);
      // Phases as any provider reports them (its status source), split by the lifecycle's own rule.
      const status = (await manager.providerFor(spec.provider).status.read(name, 'n1'))!;
      const times = phaseTimes(status.transitions, status);
      results.push({ disksAndAgentMs: times.provisionMs!, runtimeMs: times.runtimeUpMs!, upMs: times.runtimeMs!, pullMs: times.pullMs!, readyMs: times.readyMs! });
      process.stderr.write(`run ${run}: up ${seconds(results.at(-1)!.upMs)} s, Ready ${seconds(results.at(-1)!.readyMs)} s\n`);
      if (run < runs) await manager.delete(name);
    }

    // The last node stays up: measure its agent while it idles at the default intervals.
    const last = `startup${runs}`;
    const agentPid = Number((await readFile(manager.store.paths(last, 'n1').agentPid, 'utf8')).trim());
    const ticksPerSecond = 100; // USER_HZ on Linux
    const before = clockTicks(await readFile(`/proc/${agentPid}/stat`, 'utf8'));
    const started = performance.now();
    await sleep(idleSeconds * 1000);
    const cpuSeconds = (clockTicks(await readFile(`/proc/${agentPid}/stat`, 'utf8')) - before) / ticksPerSecond;
    const agentShare = cpuSeconds / ((performance.now() - started) / 1000);
    await manager.delete(last);

    const pick = (key: keyof Run) => median(results.map((r) => r[key]));
    const all = (key: keyof Run) => results.map((r) => seconds(r[key])).join(', ');
    process.stdout.write(
      `\nCold local node, ${runs} runs (median), ${imageMb} MB image; agent CPU over ${idleSeconds} s at the default probe interval (10 s) and disk sampling (1 s)\n\n` +
        markdownTable(
          ['measure', 'median', 'runs', 'target', 'target / measured'],
          [
            ['disks made + agent started (s)', seconds(pick('disksAndAgentMs')), all('disksAndAgentMs'), '', ''],
            ['containerd + dockerd answering (s)', seconds(pick('runtimeMs')), all('runtimeMs'), '', ''],
            ['**disks and runtime up, before the pull (s)**', seconds(pick('upMs')), all('upMs'), '2.00', (2000 / pick('upMs')).toFixed(2)],
            ['pull + verify the image (s)', seconds(pick('pullMs')), all('pullMs'), '', ''],
            ['created -> Ready (s)', seconds(pick('readyMs')), all('readyMs'), '', ''],
            ['**agent CPU (% of one core)**', (agentShare * 100).toFixed(2), `${cpuSeconds.toFixed(2)} CPU s`, '1.00', (0.01 / Math.max(agentShare, 1e-6)).toFixed(1)],
          ],
        ) +
        '\n',
    );
  } finally {
    for (const pool of await manager.store.listPools()) await manager.delete(pool).catch(() => {});
    await registry.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  process.stderr.write(`node-startup: ${err.message}\n`);
  process.exitCode = 1;
});
