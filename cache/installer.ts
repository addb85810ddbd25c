import { spawn } from 'node:child_process';
import { BuildfleetError } from '../imagebuilder/errors.js';
import type { ToolchainKey } from './key.js';

/**
 * Runs an installer the way nvm / pyenv / rbenv-style scripts are run: `sh -c CMD` with TOOL,
 * VERSION and PREFIX (and OS, ARCH, LIBC) in its environment, installing into PREFIX. PREFIX is a
 * work directory that is renamed into place afterwards; TOOL_PATH says where the tree will live,
 * for a build that must embed its final path (configure for TOOL_PATH, install into PREFIX). It runs in
 * a process group of its own, and whatever of that group is left when the shell exits is killed,
 * so no stray child keeps writing into a work directory that is about to be removed (or keeps
 * our pipes open). `onOutput` gets its stdout and stderr lines (the CLI sends them to stderr:
 * stdout is for the path).
 */
export async function runInstaller(command: string, key: ToolchainKey, prefix: string, toolPath: string, onOutput?: (line: string) => void): Promise<void> {
  const child = spawn('sh', ['-c', command], {
    env: { ...process.env, TOOL: key.tool, VERSION: key.version, PREFIX: prefix, TOOL_PATH: toolPath, OS: key.os, ARCH: key.architecture, LIBC: key.libc },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let tail = '';
  const take = (chunk: Buffer) => {
    const text = chunk.toString();
    tail = (tail + text).slice(-4096);
    if (onOutput) for (const line of text.split('\n')) if (line) onOutput(line);
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  const killGroup = () => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* the group is already gone */
    }
  };
  // If we are told to stop, the installer stops too.
  process.once('exit', killGroup);
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('error', (err) => reject(new BuildfleetError('environment', `installer for ${key.tool} ${key.version} could not start: ${err.message}`)));
      // 'exit' comes when the shell ends, 'close' once its pipes are closed too: the group is
      // killed between the two, so a background child cannot hold them open.
      child.once('exit', killGroup);
      child.once('close', (code, signal) => {
        if (code === 0) return resolve();
        const line = tail.trim().split('\n').filter(Boolean).pop();
        const how = signal ? `was killed by ${signal}` : `failed with exit code ${code}`;
        reject(new BuildfleetError('environment', `installer for ${key.tool} ${key.version} ${how}${line ? `: ${line.slice(0, 300)}` : ''}`));
      });
    });
  } finally {
    process.removeListener('exit', killGroup);
  }
}
