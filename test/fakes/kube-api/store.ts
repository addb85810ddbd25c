import { randomUUID } from 'node:crypto';

/**
 * The fake API server's memory: objects by resource type, one resourceVersion counter for all of
 * them (as etcd's revision), and a bounded history of changes that watches replay from. A watch
 * asking for a version older than the history holds gets 410 Gone, as after an etcd compaction.
 */

export type ObjectMeta = {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
  generateName?: string;
  [field: string]: unknown;
};

export type KubeObject = { apiVersion?: string; kind?: string; metadata: ObjectMeta; [field: string]: unknown };

/** A resource the fake serves: where it lives in the URL space and what it is called. */
export type ResourceType = {
  /** '' for the core group (/api/v1). */
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
};

export const RESOURCES: ResourceType[] = [
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false },
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true },
  { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true },
  { group: 'apps', version: 'v1', plural: 'daemonsets', kind: 'DaemonSet', namespaced: true },
  { group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget', namespaced: true },
];

export function apiVersionOf(type: ResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

/** An error the router answers as a Kubernetes Status object. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';
export type StoredEvent = { type: WatchEventType; resource: string; object: KubeObject; resourceVersion: number };

const key = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;
const clone = <T>(value: T): T => structuredClone(value);

export class ObjectStore {
  private revision = 0;
  private readonly objects = new Map<string, Map<string, KubeObject>>();
  private history: StoredEvent[] = [];
  /** Versions at or below this are gone from the history (compacted). */
  private compactedThrough = 0;
  private readonly listeners = new Set<(event: StoredEvent) => void>();

  constructor(private readonly historyLimit = 1000) {}

  get resourceVersion(): string {
    return String(this.revision);
  }

  private table(resource: string): Map<string, KubeObject> {
    let table = this.objects.get(resource);
    if (!table) this.objects.set(resource, (table = new Map()));
    return table;
  }

  list(type: ResourceType, namespace?: string): KubeObject[] {
    const items = [...this.table(type.plural).values()].filter((object) => namespace === undefined || object.metadata.namespace === namespace);
    return items.map(clone).sort((a, b) => key(a.metadata.namespace, a.metadata.name).localeCompare(key(b.metadata.namespace, b.metadata.name)));
  }

  get(type: ResourceType, namespace: string | undefined, name: string): KubeObject {
    const object = this.table(type.plural).get(key(namespace, name));
    if (!object) throw new ApiError(404, 'NotFound', `${type.plural} "${name}" not found`, { name, kind: type.plural });
    return clone(object);
  }

  create(type: ResourceType, namespace: string | undefined, input: KubeObject): KubeObject {
    const metadata = { ...input.metadata };
    if (!metadata.name && metadata.generateName) metadata.name = metadata.generateName + randomUUID().slice(0, 5);
    if (!metadata.name) throw new ApiError(422, 'Invalid', `${type.kind} is invalid: metadata.name: Required value`);
    if (type.namespaced) metadata.namespace = namespace ?? metadata.namespace ?? 'default';
    else delete metadata.namespace;
    const table = this.table(type.plural);
    if (table.has(key(metadata.namespace, metadata.name))) {
      throw new ApiError(409, 'AlreadyExists', `${type.plural} "${metadata.name}" already exists`, { name: metadata.name, kind: type.plural });
    }
    const object: KubeObject = { ...clone(input), apiVersion: apiVersionOf(type), kind: type.kind, metadata: { ...metadata, uid: randomUUID(), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } };
    return this.commit(type, 'ADDED', object);
  }

  /**
   * Replaces an object (PUT, or the result of a patch). A resourceVersion in the new object must
   * be the stored one (optimistic concurrency: 409 Conflict otherwise).
   */
  replace(type: ResourceType, namespace: string | undefined, name: string, next: KubeObject): KubeObject {
    const current = this.get(type, namespace, name);
    const asked = next.metadata?.resourceVersion;
    if (asked !== undefined && asked !== current.metadata.resourceVersion) {
      throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${type.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: type.plural });
    }
    const object: KubeObject = { ...next, apiVersion: apiVersionOf(type), kind: type.kind, metadata: { ...next.metadata, name, namespace: current.metadata.namespace, uid: current.metadata.uid, creationTimestamp: current.metadata.creationTimestamp } };
    if (!type.namespaced) delete object.metadata.namespace;
    if (JSON.stringify({ ...object, metadata: { ...object.metadata, resourceVersion: undefined } }) === JSON.stringify({ ...current, metadata: { ...current.metadata, resourceVersion: undefined } })) {
      return current; // a no-op write keeps its version and sends no watch event, as the real server does
    }
    return this.commit(type, 'MODIFIED', object);
  }

  delete(type: ResourceType, namespace: string | undefined, name: string): KubeObject {
    const current = this.get(type, namespace, name);
    this.table(type.plural).delete(key(namespace, name));
    return this.commit(type, 'DELETED', current, false);
  }

  private commit(type: ResourceType, eventType: WatchEventType, object: KubeObject, keep = true): KubeObject {
    this.revision++;
    object.metadata.resourceVersion = String(this.revision);
    if (keep) this.table(type.plural).set(key(object.metadata.namespace, object.metadata.name), clone(object));
    const event: StoredEvent = { type: eventType, resource: type.plural, object: clone(object), resourceVersion: this.revision };
    this.history.push(event);
    if (this.history.length > this.historyLimit) this.compactedThrough = this.history.shift()!.resourceVersion;
    for (const listener of this.listeners) listener(event);
    return clone(object);
  }

  /** Forgets the change history, as an etcd compaction does: older watches get 410 Gone. */
  compact(): void {
    this.compactedThrough = this.revision;
    this.history = [];
  }

  /** The changes after `version` for one resource; undefined when they are compacted away. */
  eventsSince(resource: string, version: number): StoredEvent[] | undefined {
    if (version < this.compactedThrough) return undefined;
    return this.history.filter((event) => event.resource === resource && event.resourceVersion > version).map(clone);
  }

  subscribe(listener: (event: StoredEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
