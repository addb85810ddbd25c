import { ApiError, type KubeObject } from './store.js';

/**
 * labelSelector and fieldSelector as the API server reads them from a query string:
 * `a=b,c!=d,e in (f,g),h notin (i),j,!k` for labels; `f=v` / `f!=v` on the few fields the
 * real server indexes (metadata.name, metadata.namespace, spec.nodeName, status.phase).
 */

export type Matcher = (object: KubeObject) => boolean;

/** Splits on commas outside parentheses. */
function terms(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '(') depth++;
    else if (text[i] === ')') depth--;
    else if (text[i] === ',' && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out.map((term) => term.trim()).filter(Boolean);
}

function labelTerm(term: string): (labels: Record<string, string>) => boolean {
  let match = /^(\S+)\s+(in|notin)\s+\((.*)\)$/.exec(term);
  if (match) {
    const [, name, op, list] = match as unknown as [string, string, string, string];
    const values = list.split(',').map((value) => value.trim());
    return op === 'in' ? (labels) => values.includes(labels[name] ?? '\0') : (labels) => !values.includes(labels[name] ?? '\0');
  }
  match = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(term);
  if (match) {
    const [, name, op, value] = match as unknown as [string, string, string, string];
    return op === '!=' ? (labels) => labels[name] !== value : (labels) => labels[name] === value;
  }
  if (/^![^!=\s]+$/.test(term)) return (labels) => !(term.slice(1) in labels);
  if (/^[^!=\s()]+$/.test(term)) return (labels) => term in labels;
  throw new ApiError(400, 'BadRequest', `unable to parse requirement: ${JSON.stringify(term)}`);
}

export function labelSelector(text: string | null): Matcher {
  const tests = terms(text ?? '').map(labelTerm);
  return (object) => tests.every((test) => test(object.metadata.labels ?? {}));
}

/** The same requirements given as a LabelSelector object (PDBs, DaemonSets). */
export function matchesSelector(selector: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values?: string[] }[] } | undefined, labels: Record<string, string>): boolean {
  if (!selector) return false;
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(([name, value]) => labels[name] === value);
  const byExpressions = (selector.matchExpressions ?? []).every(({ key, operator, values = [] }) => {
    switch (operator) {
      case 'In':
        return values.includes(labels[key] ?? '\0');
      case 'NotIn':
        return !values.includes(labels[key] ?? '\0');
      case 'Exists':
        return key in labels;
      case 'DoesNotExist':
        return !(key in labels);
      default:
        throw new ApiError(422, 'Invalid', `unknown label selector operator ${operator}`);
    }
  });
  return byLabels && byExpressions;
}

const FIELDS: Record<string, (object: KubeObject) => string | undefined> = {
  'metadata.name': (object) => object.metadata.name,
  'metadata.namespace': (object) => object.metadata.namespace,
  'spec.nodeName': (object) => (object.spec as { nodeName?: string } | undefined)?.nodeName ?? '',
  'status.phase': (object) => (object.status as { phase?: string } | undefined)?.phase ?? '',
};

export function fieldSelector(text: string | null): Matcher {
  const tests = terms(text ?? '').map((term) => {
    const match = /^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    const field = match && FIELDS[match[1]!];
    if (!match || !field) throw new ApiError(400, 'BadRequest', `field label not supported: ${term}`);
    const value = match[3]!;
    return match[2] === '!=' ? (object: KubeObject) => field(object) !== value : (object: KubeObject) => field(object) === value;
  });
  return (object) => tests.every((test) => test(object));
}
