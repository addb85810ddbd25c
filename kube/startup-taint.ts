import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import { kubeError, statusOf } from './client.js';
import { recordNodeEvent } from './events.js';

/**
 * The startup taint keeps builds off a new node (and the cluster autoscaler counting it as
 * still starting) until the build image is on it. The agent removes it once the pinned digest
 * is in node.status.images (kubelet reports it after the pre-pull DaemonSet's container got the
 * image) and the runtime answers. It removes only its own taint, by a JSON patch that first
 * tests the taint is still where it read it, so a concurrent change to other taints is never
 * overwritten (the taint list has no merge key: a merge patch would replace it whole).
 */

export type TaintDecision =
  | { action: 'remove'; index: number; taint: NonNullable<NonNullable<V1Node['spec']>['taints']>[number] }
  | { action: 'wait'; why: string }
  | { action: 'none'; why: string };

/** `digest`: sha256:... of the build image (its manifest, as the registry and kubelet name it). */
export function decideStartupTaint(node: V1Node, settings: { taintKey: string; digest: string; runtimeHealthy: boolean }): TaintDecision {
  const taints = node.spec?.taints ?? [];
  const index = taints.findIndex((taint) => taint.key === settings.taintKey);
  if (index < 0) return { action: 'none', why: 'the node has no startup taint' };
  const names = (node.status?.images ?? []).flatMap((image) => image.names ?? []);
  if (!names.some((name) => name.endsWith(`@${settings.digest}`))) return { action: 'wait', why: `${settings.digest} is not in node.status.images yet` };
  if (!settings.runtimeHealthy) return { action: 'wait', why: 'the runtime is not healthy' };
  return { action: 'remove', index, taint: taints[index]! };
}

export type TaintResult = { removed: boolean; why: string };

export class StartupTaintRemover {
  private readonly core: CoreV1Api;

  constructor(config: KubeConfig, private readonly settings: { nodeName: string; taintKey: string; digest: string }) {
    this.core = config.makeApiClient(CoreV1Api);
  }

  /** Idempotent: call it on every node update and health change; removes the taint at most once. */
  async check(runtimeHealthy: boolean, node?: V1Node): Promise<TaintResult> {
    for (let attempt = 0; ; attempt++) {
      const current = attempt === 0 && node ? node : await this.read();
      const decision = decideStartupTaint(current, { ...this.settings, runtimeHealthy });
      if (decision.action !== 'remove') return { removed: false, why: decision.why };
      const path = `/spec/taints/${decision.index}`;
      try {
        await this.core.patchNode({ name: this.settings.nodeName, body: [{ op: 'test', path, value: decision.taint }, { op: 'remove', path }] }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
      } catch (err) {
        // The taints changed since the read (or the read was stale): read again and decide again.
        if ((statusOf(err) === 422 || statusOf(err) === 409) && attempt < 4) continue;
        throw kubeError(`remove the startup taint from node ${this.settings.nodeName}`, err);
      }
      await recordNodeEvent(this.core, { name: this.settings.nodeName }, { reason: 'StartupTaintRemoved', message: `build image ${this.settings.digest} is present and the runtime is healthy: removed ${this.settings.taintKey}` }, 'buildfleet-agent');
      return { removed: true, why: 'image present and runtime healthy' };
    }
  }

  private async read(): Promise<V1Node> {
    try {
      return await this.core.readNode({ name: this.settings.nodeName });
    } catch (err) {
      throw kubeError(`read node ${this.settings.nodeName}`, err);
    }
  }
}
