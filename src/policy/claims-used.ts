import type { PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';

/**
 * The attributes a policy set reads off one record (`<record>.<name>`, `<record> has <name>`): Cedar has no
 * dynamic attribute access, so each read names its attribute literally. Null when some policy uses the
 * record whole, or reaches it in a way no static reading can follow (`escapes`): then every attribute may be
 * read.
 */
function attributesRead(
  policies: readonly PolicyJson[],
  target: { isRecord(node: unknown): boolean; escapes(node: Record<string, unknown>): boolean },
): Set<string> | null {
  const names = new Set<string>();
  let whole = false;
  const walk = (node: unknown): void => {
    if (whole || node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(walk);
    const record = node as Record<string, unknown>;
    for (const op of ['.', 'has'] as const) {
      const access = record[op] as { left?: unknown; attr?: string | string[] } | undefined;
      if (access && target.isRecord(access.left)) {
        names.add(Array.isArray(access.attr) ? (access.attr[0] as string) : (access.attr as string));
        return;
      }
    }
    if (target.isRecord(record) || target.escapes(record)) {
      whole = true;
      return;
    }
    Object.values(record).forEach(walk);
  };
  policies.forEach(walk);
  return whole ? null : names;
}

const isClaimsRecord = (node: unknown): boolean => {
  const access = (node as { '.'?: { left?: { Var?: string }; attr?: string } } | null)?.['.'];
  return access?.attr === 'claims' && access.left?.Var === 'principal';
};

/**
 * The claim names a policy set can read, or null (all). Passing Cedar only these claims cannot change a
 * decision, and Cedar's cost grows with every attribute. `claims` read off anything but `principal` itself
 * (`Workload::"dev/x".claims`, `(if .. then principal else ..).claims`) has no static answer: all claims.
 */
export const claimsUsed = (policies: readonly PolicyJson[]): Set<string> | null =>
  attributesRead(policies, {
    isRecord: isClaimsRecord,
    escapes: (node) => (node['.'] as { attr?: string } | undefined)?.attr === 'claims',
  });

/**
 * The `context` attributes a policy set reads (`context.x`, `context has x`), or null when some policy uses
 * `context` whole: then every attribute may be read. Lets the broker skip a lookup (entitlements) whose
 * answer no policy could see.
 */
export const contextAttributesRead = (policies: readonly PolicyJson[]): Set<string> | null =>
  attributesRead(policies, {
    isRecord: (node) => (node as { Var?: string } | null)?.Var === 'context',
    escapes: () => false,
  });

/**
 * The attributes a policy set reads off `principal` or `resource` (`principal.kind`, `resource has
 * provider`), or null when some policy's condition uses the variable whole (`principal == …`, `resource in
 * …`): then every attribute may be read. (A scope's `principal == Workload::"…"` is not a condition: it
 * names no attribute and needs none.)
 */
export const entityAttributesRead = (
  policies: readonly PolicyJson[],
  variable: 'principal' | 'resource',
): Set<string> | null =>
  attributesRead(policies, {
    isRecord: (node) => (node as { Var?: string } | null)?.Var === variable,
    escapes: () => false,
  });

/** The record with only the attributes in `used` (itself when `used` is null). */
export function pruneRecord<T>(record: Record<string, T>, used: Set<string> | null): Record<string, T> {
  if (!used) return record;
  const out: Record<string, T> = {};
  for (const name of used) if (Object.hasOwn(record, name)) out[name] = record[name] as T;
  return out;
}

/** The claims record with only the names in `used` (all of it when `used` is null). */
export function pruneClaims(
  claims: Record<string, string>,
  used: Set<string> | null,
): Record<string, string> {
  if (!used) return claims;
  const out: Record<string, string> = {};
  for (const name of used) if (Object.hasOwn(claims, name)) out[name] = claims[name] as string;
  return out;
}
