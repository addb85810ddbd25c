import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { packageRoot } from '../../imagebuilder/package-root.js';

/**
 * Each node runs its own agent, so the agent's start-up is paid once per node, by all of a new
 * pool's nodes at once: the packages its entry loads are listed here, and the heavy ones the
 * agent does not need to reach Ready must stay out (each costs 0.1-0.3 s of CPU to load).
 */

const HEAVY = ['zod', 'yaml', 'execa', 'undici', 'dockerode', '@grpc/grpc-js', 'p-limit'];

/** The npm packages a fresh Node process resolves while importing `module`, in order. */
async function packagesLoadedBy(module: string): Promise<string[]> {
  const hook = `
    export async function resolve(specifier, context, next) {
      const resolved = await next(specifier, context);
      const match = /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(resolved.url);
      if (match) process.stderr.write('package ' + match[1] + '\\n');
      return resolved;
    }`;
  const script = `
    import { register } from 'node:module';
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}));
    await import(${JSON.stringify(module)});`;
  const { stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: packageRoot });
  return [...new Set(stderr.split('\n').flatMap((line) => (line.startsWith('package ') ? [line.slice('package '.length)] : [])))];
}

test('the node agent starts without loading the heavy packages it does not need for Ready', { timeout: 60_000 }, async () => {
  const loaded = await packagesLoadedBy('./nodepool/agent/agent.ts');
  // The probe finds the list when the import graph works: the exporters' packages are there.
  assert.ok(loaded.includes('pino') && loaded.includes('prom-client'), `the hook saw: ${loaded.join(', ')}`);
  assert.deepEqual(loaded.filter((name) => HEAVY.includes(name)), [], `the agent loads ${loaded.join(', ')}`);
});

test('the direct pre-pull, loaded on demand, still brings the registry client', { timeout: 60_000 }, async () => {
  const loaded = await packagesLoadedBy('./nodepool/agent/detectors/direct-prepull.ts');
  assert.ok(loaded.includes('undici'), `the direct pre-pull loads ${loaded.join(', ')}`);
});
