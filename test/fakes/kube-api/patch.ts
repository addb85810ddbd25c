import { ApiError } from './store.js';

/**
 * The three patch formats the API server takes: JSON patch (RFC 6902), JSON merge patch
 * (RFC 7386) and the strategic merge patch. Strategic merge here knows only the list merge keys
 * of the fields buildfleet patches (see MERGE_KEYS); any other list is replaced, as a list
 * without a patch strategy is in the real server (node.spec.taints is one of those).
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const isObject = (value: unknown): value is JsonObject => typeof value === 'object' && value !== null && !Array.isArray(value);
const invalid = (message: string) => new ApiError(422, 'Invalid', message);

// ---- JSON patch ----

type Operation = { op: string; path: string; value?: Json; from?: string };

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw invalid(`json patch: bad path ${JSON.stringify(path)}`);
  return path.slice(1).split('/').map((token) => token.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** The container the last token of `tokens` points into, and that token. */
function parentOf(document: Json, tokens: string[], path: string): { parent: JsonObject | Json[]; last: string } {
  let node: Json = document;
  for (const token of tokens.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(node) ? node[Number(token)] : isObject(node) ? node[token] : undefined;
    if (next === undefined) throw invalid(`json patch: path ${path} does not exist`);
    node = next;
  }
  if (!Array.isArray(node) && !isObject(node)) throw invalid(`json patch: path ${path} does not exist`);
  return { parent: node, last: tokens[tokens.length - 1]! };
}

function read(document: Json, path: string): Json {
  const tokens = pointer(path);
  if (tokens.length === 0) return document;
  const { parent, last } = parentOf(document, tokens, path);
  const value = Array.isArray(parent) ? parent[Number(last)] : parent[last];
  if (value === undefined) throw invalid(`json patch: path ${path} does not exist`);
  return value;
}

function add(document: Json, path: string, value: Json): Json {
  const tokens = pointer(path);
  if (tokens.length === 0) return value;
  const { parent, last } = parentOf(document, tokens, path);
  if (Array.isArray(parent)) {
    const index = last === '-' ? parent.length : Number(last);
    if (!Number.isInteger(index) || index < 0 || index > parent.length) throw invalid(`json patch: index ${last} out of range at ${path}`);
    parent.splice(index, 0, value);
  } else parent[last] = value;
  return document;
}

function remove(document: Json, path: string): Json {
  read(document, path);
  const tokens = pointer(path);
  const { parent, last } = parentOf(document, tokens, path);
  if (Array.isArray(parent)) parent.splice(Number(last), 1);
  else delete parent[last];
  return document;
}

/** JSON text with object keys sorted: RFC 6902 `test` compares members, not their order. */
function canonical(value: Json): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (isObject(value)) return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k]!)}`).join(',')}}`;
  return JSON.stringify(value);
}

export function applyJsonPatch<T>(target: T, operations: unknown): T {
  if (!Array.isArray(operations)) throw new ApiError(400, 'BadRequest', 'json patch: the body must be a JSON array of operations');
  let document = structuredClone(target) as Json;
  for (const operation of operations as Operation[]) {
    switch (operation.op) {
      case 'add':
        document = add(document, operation.path, structuredClone(operation.value ?? null));
        break;
      case 'remove':
        document = remove(document, operation.path);
        break;
      case 'replace':
        document = add(remove(document, operation.path), operation.path, structuredClone(operation.value ?? null));
        break;
      case 'move': {
        const value = read(document, operation.from ?? '');
        document = add(remove(document, operation.from ?? ''), operation.path, value);
        break;
      }
      case 'copy':
        document = add(document, operation.path, structuredClone(read(document, operation.from ?? '')));
        break;
      case 'test':
        if (canonical(read(document, operation.path)) !== canonical(operation.value ?? null)) {
          throw invalid(`json patch: test failed at ${operation.path}`);
        }
        break;
      default:
        throw new ApiError(400, 'BadRequest', `json patch: unknown operation ${JSON.stringify(operation.op)}`);
    }
  }
  return document as T;
}

// ---- JSON merge patch ----

export function applyMergePatch<T>(target: T, patch: unknown): T {
  return mergeValue(structuredClone(target) as Json, patch as Json, []) as T;
}

// ---- strategic merge patch ----

/** List fields merged element by element (by this key) instead of replaced, as in the real API's schema. */
const MERGE_KEYS: Record<string, string> = {
  'status.conditions': 'type',
  'status.addresses': 'type',
  'spec.containers': 'name',
  'spec.initContainers': 'name',
  'spec.volumes': 'name',
  'metadata.ownerReferences': 'uid',
};
/** Lists of scalars merged as sets. */
const SET_LISTS = new Set(['metadata.finalizers']);

export function applyStrategicMergePatch<T>(target: T, patch: unknown): T {
  if (!isObject(patch)) throw new ApiError(400, 'BadRequest', 'strategic merge patch: the body must be a JSON object');
  return mergeValue(structuredClone(target) as Json, patch, [], true) as T;
}

function mergeValue(target: Json | undefined, patch: Json, path: string[], strategic = false): Json {
  if (!isObject(patch)) return structuredClone(patch);
  if (strategic && patch.$patch === 'replace') {
    const { $patch: _, ...rest } = patch;
    return structuredClone(rest);
  }
  const result: JsonObject = isObject(target) ? target : {};
  for (const [field, value] of Object.entries(patch)) {
    if (strategic && field.startsWith('$')) continue; // $setElementOrder, $retainKeys: order and pruning hints
    if (strategic && field.startsWith('$deleteFromPrimitiveList/')) {
      const name = field.slice('$deleteFromPrimitiveList/'.length);
      const list = result[name];
      if (Array.isArray(list) && Array.isArray(value)) result[name] = list.filter((item) => !value.includes(item));
      continue;
    }
    const fieldPath = [...path, field];
    if (value === null) delete result[field];
    else if (strategic && Array.isArray(value)) result[field] = mergeList(result[field], value, fieldPath.join('.'));
    else result[field] = mergeValue(result[field], value, fieldPath, strategic);
  }
  return result;
}

function mergeList(target: Json | undefined, patch: Json[], path: string): Json[] {
  const current = Array.isArray(target) ? target : [];
  if (SET_LISTS.has(path)) return [...current, ...patch.filter((item) => !current.includes(item))];
  const mergeKey = MERGE_KEYS[path];
  if (!mergeKey) return structuredClone(patch.filter((item) => !(isObject(item) && item.$patch)));
  const result = [...current];
  for (const item of patch) {
    if (!isObject(item)) throw invalid(`strategic merge patch: ${path} takes objects keyed by ${mergeKey}`);
    const index = result.findIndex((existing) => isObject(existing) && existing[mergeKey] === item[mergeKey]);
    if (item.$patch === 'delete') {
      if (index >= 0) result.splice(index, 1);
    } else if (index >= 0) result[index] = mergeValue(result[index], item, path.split('.'), true);
    else result.push(mergeValue({}, item, path.split('.'), true));
  }
  return result;
}
