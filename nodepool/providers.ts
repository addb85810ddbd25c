import { BuildfleetError } from '../imagebuilder/errors.js';
import type { PoolSpec } from './pool-spec/pool-spec.js';
import type { StateStore } from './state/store.js';
import type { Provider } from './provider.js';
import { LocalProvider } from './local/provider.js';
import { GkeProvider } from './gke/provider.js';

/**
 * The providers this build has, by the spec's `provider`: the one place outside `local/` that
 * knows `local/` exists, so a new provider is a new folder and one line here.
 */

export type ProviderName = PoolSpec['provider'];

/** How the manager gets the provider of a pool (a test passes its own). */
export type ProviderResolver = (name: ProviderName, store: StateStore) => Provider;

export const builtInProviders: ProviderResolver = (name, store) => {
  if (name === 'local') return new LocalProvider(store);
  if (name === 'gke') return new GkeProvider(store);
  throw new BuildfleetError('unsupported', `provider ${name} is not available yet; use provider: local`);
};
