import type { PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';

/**
 * What a policy set can read under one variable (`principal`, `resource`, `context`): each attribute it names
 * and, under that, what it reads further (`context.task.ticket` reads `task` → `ticket`). `null` stands for
 * a value read whole. Cedar has no dynamic attribute access, so every read names its attribute literally.
 */
export type ReadTree = Map<string, ReadTree | null>;

type Variable = 'principal' | 'resource' | 'context';
type Node = Record<string, unknown>;

const isNode = (value: unknown): value is Node =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * The attributes a policy set reads off `variable`, or null when it may read the value whole: a policy's
 * condition uses the variable itself (`principal == …`, `resource in …`, `context` passed on), or, for an
 * entity, reads an attribute off a root no static reading can follow (`Workload::"gh/x".kind` is the
 * principal's own attribute when that workload asks). A scope's `principal == Workload::"…"` is not a
 * condition: it names no attribute and needs none.
 */
export function attributesRead(policies: readonly PolicyJson[], variable: Variable): ReadTree | null {
  const tree: ReadTree = new Map();
  let whole = false;
  const add = (path: readonly string[]) => {
    let at = tree;
    for (const [index, name] of path.entries()) {
      if (index === path.length - 1) return void at.set(name, null);
      let next = at.get(name);
      if (next === null) return; // already read whole
      if (next === undefined) at.set(name, (next = new Map()));
      at = next;
    }
  };
  const walk = (node: unknown): void => {
    if (whole || node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(walk);
    const record = node as Node;
    for (const op of ['.', 'has'] as const) {
      const access = record[op];
      if (!isNode(access) || !('left' in access)) continue;
      // Follow a chain of `.` down to its root: `context.task.ticket` is `task`, `ticket` off `context`. A copy:
      // `has a.b` keeps its path as an array in the policy's JSON, which is read again for each variable.
      const path = (Array.isArray(access.attr) ? [...access.attr] : [access.attr]) as string[];
      let root = access.left;
      while (isNode(root) && isNode(root['.'])) {
        const inner = root['.'];
        path.unshift(inner.attr as string);
        root = inner.left;
      }
      if (isNode(root) && typeof root.Var === 'string') {
        if (root.Var === variable) add(path);
        return;
      }
      if (variable !== 'context') {
        whole = true;
        return;
      }
      return walk(root);
    }
    if (record.Var === variable) {
      whole = true;
      return;
    }
    Object.values(record).forEach(walk);
  };
  policies.forEach(walk);
  return whole ? null : tree;
}

/** A record Cedar reads attributes off; an entity reference or an extension value stays as it is. */
const isRecord = (value: unknown): value is Record<string, unknown> =>
  isNode(value) && !('__entity' in value) && !('__extn' in value);

/**
 * The value with only what `tree` reads (itself when `tree` is null). Only its own attributes: nothing
 * inherited from Object.prototype slips into a policy request. Passing Cedar only these cannot change a
 * decision, and Cedar's cost grows with every attribute it is given.
 */
export function prune<T>(value: T, tree: ReadTree | null): T {
  if (tree === null || !isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [name, below] of tree) if (Object.hasOwn(value, name)) out[name] = prune(value[name], below);
  return out as T;
}
