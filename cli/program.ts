import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../imagebuilder/package-root.js';
import { Command, Option } from 'commander';
import { registerImageCommands } from './image.js';
import { registerQuickstart } from './quickstart.js';
import { registerBenchCommands } from './bench.js';
import { registerCacheCommands } from './cache.js';
import { registerKubeCommands } from './kube.js';
import { registerAgentCommand, registerPoolCommands } from './pool.js';
import { reportError } from './output.js';
import { commandPath, wantsJson } from './errors.js';
import type { GlobalOptions } from './global-options.js';

function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

/**
 * `json`: errors go out as one JSON object (reportError), so commander prints none of its own and,
 * with --json, no help on stderr either. Set before the commands are added: they copy it.
 */
export function buildProgram(options: { json?: boolean } = {}): Command {
  const program = new Command('buildfleet')
    .configureOutput({
      outputError: () => {},
      writeErr: (text) => (options.json ? undefined : process.stderr.write(text)),
    })
    .description('Make CI build nodes ready fast and keep them healthy: image squash and push, dual-disk node pools, runtime and disk health.')
    .version(version(), '-V, --version')
    .option('--json', 'machine-readable output on stdout', false)
    .option('-q, --quiet', 'print only errors', false)
    .option('--platform <os/arch>', 'platform to take from a multi-arch image (default: this machine\'s)')
    .addOption(new Option('--insecure <host>', 'registry host to reach over plain HTTP (loopback always is); repeatable').argParser((value: string, previous: string[] = []) => [...previous, value]).default([]))
    .option('--ca-file <path>', 'extra CA certificate (PEM) for registry TLS')
    .option('--authfile <path>', 'docker config.json with registry credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json)')
    .option('--creds <user:password>', 'registry credentials, instead of the auth file')
    .exitOverride();
  const globals = () => program.opts<GlobalOptions>();
  registerImageCommands(program, globals);
  registerPoolCommands(program, globals);
  registerAgentCommand(program);
  registerQuickstart(program, globals);
  registerBenchCommands(program, globals);
  registerCacheCommands(program, globals);
  registerKubeCommands(program, globals);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const words = argv.slice(2);
  const json = wantsJson(words);
  const program = buildProgram({ json });
  try {
    await program.parseAsync(argv);
    // A command may set its own code (pool exec passes on the job's).
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    return reportError(err, { json, command: commandPath(program, words) });
  }
}
