import { BuildfleetError } from '../../imagebuilder/errors.js';

/**
 * A pool's name, apart from the schema: the state store checks names on every path it makes,
 * and the node agent loads the store, so this must not pull zod and yaml into each agent.
 */
export const POOL_NAME = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;
export const POOL_NAME_RULE = 'lowercase letters, digits and "-", 2-32 characters, starting with a letter';

/** Refuses (exit 2) anything that is not a pool name, before it is used as a path. */
export function checkPoolName(name: string): string {
  if (!POOL_NAME.test(name)) throw new BuildfleetError('usage', `${JSON.stringify(name)} is not a pool name: ${POOL_NAME_RULE}`);
  return name;
}
