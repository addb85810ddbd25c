#!/usr/bin/env node
import { runAgent } from './agent.js';

/**
 * The agent's own entry, what the local provider starts per node: the same agent as
 * `buildfleet agent run --node-dir DIR`, without loading the whole CLI first (a cold node's
 * runtime comes up sooner by that much).
 */
const at = process.argv.indexOf('--node-dir');
const nodeDir = at > 0 ? process.argv[at + 1] : undefined;
if (!nodeDir) {
  process.stderr.write('usage: agent --node-dir DIR\n');
  process.exitCode = 2;
} else {
  try {
    await runAgent(nodeDir);
  } catch (err) {
    process.stderr.write(`buildfleet agent: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
