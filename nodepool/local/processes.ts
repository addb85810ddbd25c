import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** Processes killed for good; and found by what their command line names, for leak checks only (cleanup goes by cgroup). */

export async function processesNaming(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    // A zombie has an empty cmdline: it holds no resources and only its parent can reap it.
    if (cmdline.split('\0').some((arg) => arg === dir || arg.includes(`${dir}/`))) pids.push(pid);
  }
  return pids;
}

/** The state letter of a /proc/PID/stat (or task stat) line: R, S, D, T, t, Z... The name before it may hold ")". */
export function procState(stat: string): string {
  const end = stat.lastIndexOf(')');
  return stat.slice(end + 2, end + 3);
}

/** Alive and not a zombie: a zombie answers kill(0) but is gone in every way that matters. */
export function isAlive(pid: number): boolean {
  try {
    return procState(readFileSync(`/proc/${pid}/stat`, 'utf8')) !== 'Z';
  } catch {
    return false;
  }
}

export async function killAll(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGCONT'); // a SIGSTOPped dockerd (a hang drill) must not survive
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + 10_000;
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(20);
}

