import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { NODE_PHASES, type NodePhase } from '../../state/lifecycle.js';
import type { NodeStatus } from '../../state/store.js';
import type { Exporter } from '../exporter.js';
import type { Observation } from '../problems.js';

/**
 * The agent's Prometheus series, from the detectors' observations and the node's phase; one
 * registry per agent, served on loopback at /metrics. The series' names are what dashboards
 * and the drills read: they stay.
 */
export class PrometheusExporter implements Exporter {
  readonly registry = new Registry();
  private readonly probeLatency: Histogram<'node'>;
  private readonly probeFailures: Counter<'node'>;
  private readonly diskUtilization: Gauge<'node' | 'disk'>;
  private readonly diskQueueDepth: Gauge<'node' | 'disk'>;
  private readonly diskFreeBytes: Gauge<'node' | 'disk'>;
  private readonly diskFreeInodes: Gauge<'node' | 'disk'>;
  private readonly diskSaturated: Gauge<'node' | 'disk'>;
  private readonly nodeState: Gauge<'node' | 'phase'>;
  private readonly pullDuration: Histogram<'node' | 'image'>;
  private readonly remediations: Counter<'node' | 'action'>;

  constructor(private readonly node: string) {
    const registers = [this.registry];
    this.probeLatency = new Histogram({
      name: 'buildfleet_runtime_probe_latency_seconds',
      help: 'Latency of the runtime health probe (list containers), failures included',
      labelNames: ['node'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.probeFailures = new Counter({ name: 'buildfleet_runtime_probe_failures_total', help: 'Runtime probes that failed or timed out', labelNames: ['node'], registers });
    this.diskUtilization = new Gauge({ name: 'buildfleet_disk_utilization_ratio', help: 'Share of the window the disk was busy (diskstats io_ticks)', labelNames: ['node', 'disk'], registers });
    this.diskQueueDepth = new Gauge({ name: 'buildfleet_disk_queue_depth', help: 'Average requests in flight over the window (diskstats weighted time)', labelNames: ['node', 'disk'], registers });
    this.diskFreeBytes = new Gauge({ name: 'buildfleet_disk_free_bytes', help: 'Free bytes on the disk (statfs)', labelNames: ['node', 'disk'], registers });
    this.diskFreeInodes = new Gauge({ name: 'buildfleet_disk_free_inodes', help: 'Free inodes on the disk (statfs)', labelNames: ['node', 'disk'], registers });
    this.diskSaturated = new Gauge({ name: 'buildfleet_disk_saturated', help: '1 while the disk\'s Saturated condition holds', labelNames: ['node', 'disk'], registers });
    this.nodeState = new Gauge({ name: 'buildfleet_node_state', help: '1 for the node\'s current lifecycle phase, 0 for the others', labelNames: ['node', 'phase'], registers });
    this.pullDuration = new Histogram({
      name: 'buildfleet_image_pull_duration_seconds',
      help: 'Time to pull (or verify) each pre-pulled image',
      labelNames: ['node', 'image'],
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers,
    });
    this.remediations = new Counter({ name: 'buildfleet_remediation_actions_total', help: 'Remediation actions taken by the agent', labelNames: ['node', 'action'], registers });
    this.setPhase('Provisioning');
  }

  observe(observation: Observation): void {
    const node = this.node;
    switch (observation.kind) {
      case 'probe':
        this.probeLatency.observe({ node }, observation.latencyMs / 1000);
        if (!observation.ok) this.probeFailures.inc({ node });
        return;
      case 'disk-space':
        this.diskFreeBytes.set({ node, disk: observation.disk }, observation.freeBytes);
        this.diskFreeInodes.set({ node, disk: observation.disk }, observation.freeInodes);
        return;
      case 'disk-load':
        this.diskUtilization.set({ node, disk: observation.disk }, observation.utilization);
        this.diskQueueDepth.set({ node, disk: observation.disk }, observation.queueDepth);
        this.diskSaturated.set({ node, disk: observation.disk }, observation.saturated ? 1 : 0);
        return;
      case 'image':
        if (observation.present) this.pullDuration.observe({ node, image: observation.image.reference }, observation.seconds);
        return;
      case 'remediation':
        this.remediations.inc({ node, action: observation.action });
        return;
    }
  }

  statusChanged(status: Readonly<NodeStatus>): void {
    this.setPhase(status.phase);
  }

  private setPhase(phase: NodePhase): void {
    for (const each of NODE_PHASES) this.nodeState.set({ node: this.node, phase: each }, each === phase ? 1 : 0);
  }

  /** Serves /metrics on 127.0.0.1 (port 0: any free one); returns the URL. */
  async serve(port = 0): Promise<{ url: string; close(): Promise<void> }> {
    const server: Server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found; try /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    const address = server.address();
    const actual = typeof address === 'object' && address ? address.port : port;
    return {
      url: `http://127.0.0.1:${actual}/metrics`,
      close: () => new Promise((resolve) => server.close(() => resolve())),
    };
  }
}
