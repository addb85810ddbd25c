import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where buildfleet's package lives, and whether this process runs its TypeScript sources (tsx)
 * or the tsc output in dist/. One answer for the CLI (version), the local provider (the agent's
 * entry), the native addon and the tests, which all need a file relative to the package.
 */
const here = fileURLToPath(import.meta.url);

/** True under tsx (sources), false when running dist/. */
export const runningFromSource = here.endsWith('.ts');

/** The folder holding buildfleet's package.json: one level up from imagebuilder/, two from dist/imagebuilder/. */
export const packageRoot = findPackageRoot(dirname(here));

function findPackageRoot(start: string): string {
  for (let dir = start; dir !== dirname(dir); dir = dirname(dir)) {
    if (isBuildfleetPackage(join(dir, 'package.json'))) return dir;
  }
  throw new Error(`buildfleet: cannot find its package root above ${start}`);
}

/** By name: an installed package holds dist/ but no sources. */
function isBuildfleetPackage(packageJson: string): boolean {
  try {
    return (JSON.parse(readFileSync(packageJson, 'utf8')) as { name?: unknown }).name === 'buildfleet';
  } catch {
    return false;
  }
}

/**
 * A module of buildfleet by its source path (e.g. 'nodepool/agent/main.ts'): the source file under
 * tsx, the compiled .js in dist/ otherwise, with the node arguments that run it.
 */
export function packageEntry(sourcePath: string): { file: string; nodeArgs: string[] } {
  if (runningFromSource) return { file: join(packageRoot, sourcePath), nodeArgs: ['--import', 'tsx'] };
  return { file: join(packageRoot, 'dist', sourcePath.replace(/\.ts$/, '.js').replace(/\.cts$/, '.cjs')), nodeArgs: [] };
}
