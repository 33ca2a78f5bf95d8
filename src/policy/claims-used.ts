import type { PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';

/**
 * The claim names a policy set can read. Cedar has no dynamic attribute access, so every read of
 * `principal.claims` is `principal.claims.<name>` or `principal.claims has <name>` with a literal name —
 * unless a policy uses the record whole (`principal.claims == {...}`), in which case the answer is null (all).
 * Passing Cedar only these claims cannot change a decision, and Cedar's cost grows with every attribute.
 */
export function claimsUsed(policies: readonly PolicyJson[]): Set<string> | null {
  const names = new Set<string>();
  let wholeRecord = false;

  const isClaimsRecord = (node: unknown): boolean => {
    const access = (node as { '.'?: { left?: { Var?: string }; attr?: string } } | null)?.['.'];
    return access?.attr === 'claims' && access.left?.Var === 'principal';
  };
  const walk = (node: unknown): void => {
    if (wholeRecord || node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(walk);
    const record = node as Record<string, unknown>;
    for (const op of ['.', 'has'] as const) {
      const access = record[op] as { left?: unknown; attr?: string | string[] } | undefined;
      if (access && isClaimsRecord(access.left)) {
        names.add(Array.isArray(access.attr) ? (access.attr[0] as string) : (access.attr as string));
        return;
      }
    }
    // The record used whole, or `claims` read off anything but `principal` itself (`Workload::"x".claims`,
    // `(if .. then principal else ..).claims`): no static answer, so every claim goes to Cedar.
    const access = record['.'] as { attr?: string } | undefined;
    if (isClaimsRecord(record) || access?.attr === 'claims') {
      wholeRecord = true;
      return;
    }
    Object.values(record).forEach(walk);
  };

  policies.forEach(walk);
  return wholeRecord ? null : names;
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

/**
 * The `context` attributes a policy set reads (`context.x`, `context has x`), or null when some policy uses
 * `context` otherwise (whole, or in a way no static reading can follow): then every attribute may be read.
 * Lets the broker skip a lookup (entitlements) whose answer no policy could see.
 */
export function contextAttributesRead(policies: readonly PolicyJson[]): Set<string> | null {
  const names = new Set<string>();
  let whole = false;
  const walk = (node: unknown): void => {
    if (whole || node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(walk);
    const record = node as Record<string, unknown>;
    if (record.Var === 'context') {
      whole = true;
      return;
    }
    for (const op of ['.', 'has'] as const) {
      const access = record[op] as { left?: { Var?: string }; attr?: string | string[] } | undefined;
      if (access?.left?.Var === 'context') {
        names.add(Array.isArray(access.attr) ? (access.attr[0] as string) : (access.attr as string));
        return;
      }
    }
    Object.values(record).forEach(walk);
  };
  policies.forEach(walk);
  return whole ? null : names;
}
