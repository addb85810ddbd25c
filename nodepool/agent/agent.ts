import { rename, rm, writeFile } from 'node:fs/promises';
import { nodePaths, readNodeRecord, resolveNodeDir } from '../state/store.js';
import { NodeRuntime } from '../local/runtime.js';
import { joinCgroup, nodeDaemonsCgroupName } from '../local/cgroups.js';
import { NodeAgent } from './node-agent.js';
import { SharedBlobCache } from '../prepull/blob-cache.js';
import { StatusFileExporter } from './exporters/status-file.js';
import { EventLogExporter } from './exporters/event-log.js';
import { PrometheusExporter } from './exporters/prometheus.js';
import { ToolcacheGc } from './toolcache-gc.js';

/**
 * The agent of a local node (`buildfleet agent run --node-dir DIR`, or `main.ts` as the local
 * provider starts it): the NodeAgent with the node's own containerd and dockerd as its runtime
 * host, and the node dir's outputs as its exporters: status.json (it is the only writer while
 * it runs), events.jsonl, and /metrics on loopback. Runs until SIGTERM or SIGINT.
 */
export async function runAgent(given: string): Promise<void> {
  // Only a real node dir of a state dir: the agent mounts, kills and removes below it.
  const dir = await resolveNodeDir(given);
  let agent: NodeAgent | undefined;
  let stopAsked = false;
  const stop = () => {
    stopAsked = true;
    agent?.stop();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // A daemon outlives terminals: a hang-up is no reason to leave the node unwatched.
  process.on('SIGHUP', () => {});
  const paths = nodePaths(dir);
  const node = await readNodeRecord(dir);
  // Before anything starts: every process of the node is then found (and only those) by its cgroup.
  await joinCgroup(nodeDaemonsCgroupName(dir), process.pid);
  const events = new EventLogExporter(paths.events, node.name);
  const metrics = new PrometheusExporter(node.name);
  const statusFile = new StatusFileExporter(dir);
  const status = await statusFile.load();
  const server = await metrics.serve();
  try {
    // Atomic: the manager takes the pidfile's appearance as "the agent runs" and reads it at once.
    await writeFile(`${paths.agentPid}.tmp`, `${process.pid}\n`);
    await rename(`${paths.agentPid}.tmp`, paths.agentPid);
    agent = new NodeAgent({
      nodeDir: dir,
      host: new NodeRuntime(paths, node),
      // The toolchain cache's gc when the workload disk runs low (spec `cache:`); it logs to the event log.
      exporters: [statusFile, events, metrics, new ToolcacheGc({ nodeDir: dir, workloadMount: node.disks.workload.mountPoint, event: (name, fields) => events.event(name, fields) })],
      ...(status && { status }),
      pid: process.pid,
      metricsUrl: server.url,
      blobCache: new SharedBlobCache(paths.blobCache),
    });
    if (stopAsked) agent.stop();
    await agent.run();
  } finally {
    await server.close();
    await rm(paths.agentPid, { force: true });
  }
}
