import type { Command } from 'commander';
import type { GlobalOptions } from './global-options.js';
import { printJson } from './output.js';

export function registerQuickstart(program: Command, globals: () => GlobalOptions): void {
  program
    .command('quickstart')
    .description('run the main job on the embedded local default: local Docker Engine + registry, build, push, copy, load on a cold node, run (needs root)')
    .action(async () => {
      const options = globals();
      const log = options.json || options.quiet ? undefined : (line: string) => process.stdout.write(line + '\n');
      const { runQuickstart } = await import('../ci/quickstart.js'); // loads daemons and dockerode: only when run
      const result = await runQuickstart(log);
      if (options.json) printJson(result);
      else if (!options.quiet) process.stdout.write(`\ndone: ${result.image} (${result.layers} layers); everything started was stopped and removed.\n`);
    });
}
