import type { Command } from 'commander';
import { exitCodeFor, isBuildfleetError, type ErrorKind } from '../imagebuilder/errors.js';
import { oneLine } from '../imagebuilder/oci/parse-error.js';

/**
 * What the CLI says about a failure, as one text line or (with --json) one JSON object on
 * stderr: `{"error":{"code":KIND,"exitCode":N,"message":LINE}}`. `code` is a stable string
 * (an ErrorKind, or "internal" for a bug, which also carries `stack`).
 */
export type ErrorReport = { code: ErrorKind | 'internal'; exitCode: number; message: string; stack?: string };

const INTERNAL_EXIT = 70;

/**
 * --json anywhere before a `--`. Read from argv because commander may fail (unknown option,
 * missing argument) before it has parsed any option.
 */
export function wantsJson(words: readonly string[]): boolean {
  const end = words.indexOf('--');
  return (end < 0 ? words : words.slice(0, end)).includes('--json');
}

/** `buildfleet image copy`: the commands that the words name, for a pointer to their --help. */
export function commandPath(program: Command, words: readonly string[]): string {
  const names = [program.name()];
  let command = program;
  for (const word of words) {
    if (word === '--') break;
    const sub = command.commands.find((candidate) => candidate.name() === word || candidate.aliases().includes(word));
    if (!sub) continue;
    names.push(sub.name());
    command = sub;
  }
  return names.join(' ');
}

type CommanderFailure = { code: string; exitCode: number; message: string };

function isCommanderFailure(err: unknown): err is CommanderFailure {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && code.startsWith('commander.');
}

/**
 * The report for an error thrown out of the program; undefined for the ends commander signals
 * by throwing that are successes (--help, --version).
 */
export function errorReport(err: unknown, command: string): ErrorReport | undefined {
  if (isBuildfleetError(err)) return { code: err.kind, exitCode: exitCodeFor[err.kind], message: oneLine(err.message) };
  if (isCommanderFailure(err)) {
    if (err.exitCode === 0) return undefined;
    // 'commander.help': a command group called without a subcommand (its help went to stderr).
    const what = err.code === 'commander.help' ? 'missing command' : oneLine(err.message.replace(/^error: /, ''));
    return { code: 'usage', exitCode: exitCodeFor.usage, message: `${what} (see '${command} --help')` };
  }
  const message = err instanceof Error ? err.message : String(err);
  const stack = err instanceof Error && err.stack ? err.stack : message;
  return { code: 'internal', exitCode: INTERNAL_EXIT, message: oneLine(message) || 'unknown error', stack };
}

/** The text stderr gets: one line, or a stack for a bug (asked to be reported with it). */
export function formatErrorReport(report: ErrorReport, json: boolean): string {
  if (json) return JSON.stringify({ error: report }) + '\n';
  if (report.code === 'internal') return `buildfleet: internal error: ${report.stack ?? report.message}\n`;
  return `buildfleet: error: ${report.message}\n`;
}
