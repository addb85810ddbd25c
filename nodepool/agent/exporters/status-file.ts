import { readNodeStatus, writeNodeStatus, type NodeStatus } from '../../state/store.js';
import type { Exporter } from '../exporter.js';

/**
 * The node's status.json, which `pool status`, `pool exec` and the manager read. The agent is
 * its only writer while it runs. Writes are serialised (never two renames racing) and each
 * writes the newest status, so the last state always lands.
 */
export class StatusFileExporter implements Exporter {
  private writes: Promise<void> = Promise.resolve();

  constructor(private readonly nodeDir: string) {}

  /** The status a previous writer left (the manager's Provisioning, or an earlier agent's), to carry on from. */
  load(): Promise<NodeStatus | undefined> {
    return readNodeStatus(this.nodeDir);
  }

  statusChanged(status: Readonly<NodeStatus>): Promise<void> {
    const write = this.writes.then(() => writeNodeStatus(this.nodeDir, status));
    // The chain goes on past a failed write; the caller hears of it from `write`.
    this.writes = write.catch(() => {});
    return write;
  }
}
