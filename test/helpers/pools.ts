import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { openDestination } from '../../imagebuilder/transports/index.js';
import type { RegistryServer } from '../../daemons/index.js';
import { writeRunnableImage, type RunnableImageOptions } from '../../bench/runnable-image.js';
import { StateStore } from '../../nodepool/state/store.js';
import { PoolManager } from '../../nodepool/pool.js';
import { leftoversBelow } from '../../nodepool/local/cleanup.js';
import { runCli, startRegistry, type CliResult } from './real.js';

/**
 * A real registry holding a runnable build image, and a state dir for pools. stop() deletes
 * every pool left in the state dir (daemons, mounts, loop devices), also after a failed test.
 */
export type PoolFixture = {
  registry: RegistryServer;
  stateDir: string;
  image: string;
  manager: PoolManager;
  cli(args: string[]): Promise<CliResult>;
  writeSpec(name: string, spec: object): Promise<string>;
  pushImage(repository: string, options: RunnableImageOptions): Promise<string>;
  stop(): Promise<void>;
};

export async function startPoolFixture(options: RunnableImageOptions = {}): Promise<PoolFixture> {
  // Short: node sockets live under it and unix socket paths stop at 107 bytes.
  const stateDir = await mkdtemp('/tmp/bf-');
  const registry = await startRegistry();
  const pushImage = async (repository: string, imageOptions: RunnableImageOptions) => {
    const reference = `${registry.host}/${repository}:1`;
    await writeRunnableImage(await openDestination(reference), imageOptions);
    return reference;
  };
  const manager = new PoolManager(new StateStore(stateDir));
  return {
    registry,
    stateDir,
    image: await pushImage('ci/build', options),
    manager,
    cli: (args) => runCli(args, { BUILDFLEET_STATE_DIR: stateDir }),
    writeSpec: async (name, spec) => {
      const path = join(stateDir, `${name}.yaml`);
      await writeFile(path, stringify(spec));
      return path;
    },
    pushImage,
    stop: async () => {
      for (const pool of await manager.store.listPools()) await manager.delete(pool).catch(() => {});
      await registry.stop();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Live processes, mounts and loop devices still below dir: all three must be empty after a delete. */
export const leftovers = leftoversBelow;
