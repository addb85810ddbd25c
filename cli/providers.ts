import { connectionFromEnv } from '../nodepool/gke/client.js';
import { GkeProvider } from '../nodepool/gke/provider.js';
import { builtInProviders, type ProviderResolver } from '../nodepool/providers.js';

/**
 * The providers the CLI's pool commands use: the built-in ones, with the GKE provider given its
 * Kubernetes side (kube/, over the kubeconfig in $KUBECONFIG or ~/.kube/config, as
 * `gcloud container clusters get-credentials` writes it), and the GKE API where
 * $BUILDFLEET_GKE_ENDPOINT says (default container.googleapis.com). nodepool/ does not import kube/, so
 * the two meet here; the Kubernetes client loads only when a GKE pool needs its nodes.
 */
export const cliProviders: ProviderResolver = (name, store) => {
  if (name !== 'gke') return builtInProviders(name, store);
  return new GkeProvider(store, {
    connection: connectionFromEnv(),
    clusterNodes: async () => {
      const [{ KubeClusterNodes }, { defaultKubeConfig }] = await Promise.all([import('../kube/cluster-nodes.js'), import('../kube/client.js')]);
      return new KubeClusterNodes(defaultKubeConfig());
    },
  });
};
