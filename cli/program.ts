import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../imagebuilder/package-root.js';
import { Command, Option } from 'commander';
import { reportError } from './output.js';
import { commandPath, wantsJson } from './errors.js';
import type { GlobalOptions } from './global-options.js';

function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

type Register = (program: Command, globals: () => GlobalOptions) => void;

/**
 * The command groups, by the top-level command each adds, in the order `--help` lists them. Each
 * module is loaded only when its group is registered: a command loads its own group alone (a
 * `cache get` hit pays for neither the image pipeline nor the pool machinery), `--help` and
 * anything that names no group load them all.
 */
const COMMAND_GROUPS: Record<string, () => Promise<Register>> = {
  image: async () => (await import('./image.js')).registerImageCommands,
  pool: async () => (await import('./pool.js')).registerPoolCommands,
  agent: async () => (await import('./pool.js')).registerAgentCommand,
  quickstart: async () => (await import('./quickstart.js')).registerQuickstart,
  bench: async () => (await import('./bench.js')).registerBenchCommands,
  cache: async () => (await import('./cache.js')).registerCacheCommands,
  kube: async () => (await import('./kube.js')).registerKubeCommands,
};

/** The first word that is neither a global option nor its value: the command group named, if any. Pure but for the program's options. */
export function firstOperand(program: Command, words: readonly string[]): string | undefined {
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (word === '--') return undefined;
    if (!word.startsWith('-')) return word;
    const flag = word.split('=')[0]!;
    const option = program.options.find((candidate) => candidate.long === flag || candidate.short === flag);
    if (option && (option.required || option.optional) && !word.includes('=')) i++;
  }
  return undefined;
}

/**
 * `json`: errors go out as one JSON object (reportError), so commander prints none of its own and,
 * with --json, no help on stderr either. Set before the commands are added: they copy it.
 * `words` (argv without node and script): register only the group they name; without, every group.
 */
export async function buildProgram(options: { json?: boolean; words?: readonly string[] } = {}): Promise<Command> {
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
  const named = options.words && firstOperand(program, options.words);
  const groups = named !== undefined && Object.hasOwn(COMMAND_GROUPS, named) ? [named] : Object.keys(COMMAND_GROUPS);
  const registers = await Promise.all(groups.map((group) => COMMAND_GROUPS[group]!()));
  for (const register of registers) register(program, globals);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const words = argv.slice(2);
  const json = wantsJson(words);
  const program = await buildProgram({ json, words });
  try {
    await program.parseAsync(argv);
    // A command may set its own code (pool exec passes on the job's).
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    return reportError(err, { json, command: commandPath(program, words) });
  }
}
