import { randomBytes, randomUUID } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A stand-in for HashiCorp Vault's HTTP API, for tests: no Vault binary can be installed here. It serves
 * only the endpoints the credential broker uses, with Vault's request and response shapes, status codes
 * and error strings (from Vault's API docs and from its token store, expiration manager and ACL code), and
 * records every request it receives. State lives in memory; time is the wall clock, evaluated lazily.
 */

export interface RecordedRequest {
  method: string;
  /** Without the leading `/v1/` and without the query string, e.g. `auth/token/create`. */
  path: string;
  token: string | undefined;
  namespace: string | undefined;
  /** The parsed JSON body; undefined when empty; the raw text when it was not a JSON object. */
  body: any;
  atMs: number;
}

export interface FakeVaultOptions {
  /** PEM strings: the server speaks https when given. */
  tls?: { cert: string; key: string };
}

export interface TokenInfo {
  token: string;
  accessor: string;
  policies: string[];
  meta: Record<string, string>;
  displayName: string;
  /** The TTL granted at creation (Vault's creation_ttl); renewals move expiresAtMs only. */
  ttlSeconds: number;
  explicitMaxTtlSeconds: number;
  /** Uses left; 0 means unlimited. */
  numUses: number;
  renewable: boolean;
  orphan: boolean;
  parentAccessor?: string;
  namespace: string;
  /** Infinity for a token that never expires. */
  expiresAtMs: number;
  type: 'service' | 'batch';
  role?: string;
}

type TokenRoleOptions = { allowedPolicies?: string[]; orphan?: boolean; tokenType?: TokenRoleType };
type TokenRoleType = 'service' | 'batch' | 'default-service';
type LoginRoleOptions = { policies: string[]; ttlSeconds: number; maxTtlSeconds: number };

export interface FakeVault {
  url: string;
  rootToken: string;
  requests: RecordedRequest[];
  /** Vault ACL semantics. Replacing `default` changes what every token gets by default, as in Vault. */
  setPolicy(name: string, rules: Array<{ path: string; capabilities: string[] }>): void;
  /** As if root created an orphan token: `default` is added unless the policies include root. */
  createToken(options: {
    policies: string[];
    ttlSeconds?: number;
    renewable?: boolean;
    explicitMaxTtlSeconds?: number;
    namespace?: string;
  }): { token: string; accessor: string };
  /** Throws, as Vault refuses such a role, when tokenType is batch and orphan is not true. */
  addTokenRole(name: string, options: TokenRoleOptions): void;
  /** Mounted at `approle`. roleName (default: the role ID) only feeds the token's role_name metadata. */
  addAppRole(options: LoginRoleOptions & { roleId: string; secretId: string; roleName?: string }): void;
  /** Mounted at `jwt`. Login accepts exactly that jwt string: no signature is checked. */
  addJwtRole(options: LoginRoleOptions & { role: string; jwt: string }): void;
  addDatabaseRole(name: string, options: { defaultTtlSeconds: number }): void;
  /** A kv v1 mount at `kv/`. */
  putKv(path: string, data: Record<string, string>): void;
  /** Live tokens only: expired and revoked ones are undefined. */
  token(token: string): TokenInfo | undefined;
  tokenByAccessor(accessor: string): TokenInfo | undefined;
  /**
   * Any lease ever issued. `revoked` is true when Vault revoked it because of an API call (sys/leases/revoke,
   * or a revocation or the last use of the token that created it); false when it, or its token, timed out.
   */
  lease(leaseId: string): LeaseInfo | undefined;
  liveLease(leaseId: string): boolean;
  /** The next `times` (default 1) requests to that path (as in RecordedRequest.path) get this error. */
  failNext(path: string, status: number, errors: string[], times?: number): void;
  seal(): void;
  unseal(): void;
  /** Closes the listener and destroys open sockets, as abrupt as an outage; state is kept. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
  close(): Promise<void>;
}
type LeaseInfo = { leaseId: string; expiresAtMs: number; revoked: boolean; username: string };

type Op = 'read' | 'update' | 'list' | 'delete';
type Rule = { path: string; capabilities: string[] };
type Body = Record<string, unknown>;
type Reply = { status: 200; body: object } | { status: 204 };

interface Token extends TokenInfo {
  /** The parent's token ID; undefined for orphans. Revoking or expiring the parent revokes this token. */
  parent?: string;
  path: string;
  entityId: string;
  issuedAtMs: number;
  periodSeconds: number;
  /** Created with num_uses > 0: such a token may not create children, not even on its last use. */
  limitedUses: boolean;
  /** Login tokens renew under their auth role's ttl and max_ttl, since Vault asks the auth method. */
  login?: { ttl: number; maxTtl: number };
  lastRenewalMs?: number;
}

interface Lease extends LeaseInfo {
  issuedAtMs: number;
  /** The token that created it: Vault revokes a token's leases with the token. */
  token: string;
  ended: boolean;
}

/** Vault's built-in default_lease_ttl and max_lease_ttl (768h), which apply when nothing else is set. */
const SYSTEM_TTL = 2_764_800;
const DENIED = '1 error occurred:\n\t* permission denied\n\n';
const UNSUPPORTED_PATH = '1 error occurred:\n\t* unsupported path\n\n';
const UNSUPPORTED_OPERATION = '1 error occurred:\n\t* unsupported operation\n\n';
const BAD_JWT =
  'error validating token: error verifying token signature: ' +
  'no known key successfully validated the token signature';
const OPERATIONS: Record<string, Op> = { GET: 'read', POST: 'update', PUT: 'update', DELETE: 'delete' };
const CAPABILITIES = new Set(['create', 'read', 'update', 'patch', 'delete', 'list', 'sudo', 'deny']);
/**
 * The part of Vault's own default policy that touches the endpoints served here. Vault's default policy
 * also grants `sys/leases/lookup` (lease metadata is not secret), so a default-only token may look leases up.
 */
const DEFAULT_POLICY: Rule[] = [
  { path: 'auth/token/lookup-self', capabilities: ['read'] },
  { path: 'auth/token/renew-self', capabilities: ['update'] },
  { path: 'auth/token/revoke-self', capabilities: ['update'] },
  { path: 'sys/leases/lookup', capabilities: ['update'] },
  { path: 'sys/leases/renew', capabilities: ['update'] },
];

class VaultError extends Error {
  constructor(
    readonly status: number,
    readonly errors: string[],
  ) {
    super(errors.join('; '));
  }
}
const fail = (status: number, ...errors: string[]) => new VaultError(status, errors);

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** Unbiased base62: bytes from 248 up are dropped, 248 being the largest multiple of 62 in a byte. */
function random(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length)) {
      if (byte < 248 && out.length < length) out += ALPHANUMERIC[byte % 62];
    }
  }
  return out;
}

const UNIT_SECONDS: Record<string, number> = { ns: 1e-9, us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400 };
/** Vault's parseutil.ParseDurationSecond: a number of seconds, "300", or a Go duration such as "1h30m". */
function seconds(value: unknown): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'number' && Number.isFinite(value)) return Math.trunc(value);
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return Number(value);
  if (typeof value === 'string' && /^-?(\d+(\.\d+)?(ns|us|ms|s|m|h|d))+$/.test(value)) {
    let total = 0;
    for (const [, n, unit] of value.matchAll(/(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d)/g)) {
      total += Number(n) * (UNIT_SECONDS[unit ?? 's'] ?? 1);
    }
    return Math.trunc(value.startsWith('-') ? -total : total);
  }
  throw fail(400, `time: invalid duration "${String(value)}"`);
}

/** mapstructure's weak decoding, which Vault applies to request fields: "true", 1 and true are all true. */
function bool(value: unknown, fallback: boolean): boolean {
  if (value === undefined || value === null || value === '') return fallback;
  if (value === true || value === 'true' || value === '1' || value === 1) return true;
  if (value === false || value === 'false' || value === '0' || value === 0) return false;
  throw fail(400, `Error decoding request: cannot parse '${String(value)}' as bool`);
}

function integer(value: unknown): number {
  if (value === undefined || value === null || value === '') return 0;
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return Number(value);
  throw fail(400, `Error decoding request: cannot parse '${String(value)}' as int`);
}

const str = (value: unknown): string => (typeof value === 'string' ? value : '');

/** Vault's comma-string-slice fields accept "a,b" as well as ["a", "b"]. */
function names(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  return typeof value === 'string' && value !== '' ? value.split(',') : [];
}

function stringMap(value: unknown): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw fail(400, "Error decoding request: 'meta' must be a map");
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, String(v)]));
}

/** Vault's policyutil.SanitizePolicies: trimmed, lower-cased, sorted, deduplicated; root absorbs the rest. */
function sanitizePolicies(list: string[], addDefault: boolean): string[] {
  const clean = list.map((p) => p.trim().toLowerCase()).filter((p) => p !== '');
  if (clean.includes('root')) return ['root'];
  if (addDefault) clean.push('default');
  return [...new Set(clean)].sort();
}
const isSubset = (superset: string[], subset: string[]) => subset.every((p) => superset.includes(p));
/** Go's %q of a []string, as Vault prints lists in its role errors. */
const goList = (list: string[]) => `[${list.map((p) => JSON.stringify(p)).join(' ')}]`;
/** Go's time.Duration.String() for whole seconds, as Vault prints durations in its TTL warnings. */
function goDuration(total: number): string {
  const [h, m, s] = [Math.floor(total / 3600), Math.floor((total % 3600) / 60), total % 60];
  return h ? `${h}h${m}m${s}s` : m ? `${m}m${s}s` : `${s}s`;
}
const iso = (ms: number) => new Date(ms).toISOString();
const remaining = (ms: number) => Math.max(0, Math.round((ms - Date.now()) / 1000));
const normalizeNamespace = (ns: string | undefined) => (ns ?? '').replace(/^\/+|\/+$/g, '');
/** A token works in its own namespace and in that namespace's children, as in Vault Enterprise. */
const usableIn = (tokenNs: string, requestNs: string) =>
  tokenNs === '' || requestNs === tokenNs || requestNs.startsWith(`${tokenNs}/`);

/**
 * Vault's ACL priority rules between two matching wildcard paths: an exact path always wins, and among
 * wildcards the first of these that differs decides (docs: "Policies", priority matching).
 */
function lowerPriority(a: string, b: string): boolean {
  const firstWildcard = (p: string) => {
    let at = 0;
    for (const segment of p.split('/')) {
      if (segment === '+') return at;
      at += segment.length + 1;
    }
    return p.endsWith('*') ? p.length - 1 : p.length;
  };
  const pluses = (p: string) => p.split('/').filter((s) => s === '+').length;
  if (firstWildcard(a) !== firstWildcard(b)) return firstWildcard(a) < firstWildcard(b);
  if (a.endsWith('*') !== b.endsWith('*')) return a.endsWith('*');
  if (pluses(a) !== pluses(b)) return pluses(a) > pluses(b);
  if (a.length !== b.length) return a.length < b.length;
  return a < b;
}
const isWildcard = (p: string) => p.endsWith('*') || p.split('/').includes('+');
function matches(pattern: string, path: string): boolean {
  const glob = pattern.endsWith('*');
  const body = (glob ? pattern.slice(0, -1) : pattern)
    .split('/')
    .map((s) => (s === '+' ? '[^/]+' : s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${body}${glob ? '.*' : ''}$`).test(path);
}

/** Vault's response envelope; each handler fills in what it returns. */
const ok = (mountType: string, fields: Body): Reply => ({
  status: 200,
  body: {
    request_id: randomUUID(),
    lease_id: '',
    renewable: false,
    lease_duration: 0,
    data: null,
    wrap_info: null,
    warnings: null,
    auth: null,
    mount_type: mountType,
    ...fields,
  },
});
const NO_CONTENT: Reply = { status: 204 };

function send(res: http.ServerResponse, status: number, body?: object): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  const headers = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' };
  res.writeHead(status, { ...headers, 'Content-Length': Buffer.byteLength(text) }).end(text);
}

interface Mint {
  policies: string[];
  /** 0: never expires. */
  ttl: number;
  path: string;
  namespace: string;
  renewable?: boolean;
  meta?: Record<string, string>;
  displayName?: string;
  numUses?: number;
  type?: 'service' | 'batch';
  explicitMax?: number;
  period?: number;
  parent?: Token;
  role?: string;
  entityId?: string;
  login?: Token['login'];
}

interface LoginRole {
  secret: string;
  name: string;
  policies: string[];
  ttl: number;
  maxTtl: number;
  entity: string;
}

export async function startFakeVault(options: FakeVaultOptions = {}): Promise<FakeVault> {
  const policies = new Map<string, Rule[]>([['default', DEFAULT_POLICY]]);
  const tokens = new Map<string, Token>();
  const accessors = new Map<string, Token>();
  const leases = new Map<string, Lease>();
  const tokenRoles = new Map<string, Required<TokenRoleOptions> & { renewable: boolean }>();
  const appRoles = new Map<string, LoginRole>(); // by role ID
  const jwtRoles = new Map<string, LoginRole>(); // by role name
  const databaseRoles = new Map<string, number>();
  const kv = new Map<string, Record<string, string>>();
  const failures = new Map<string, { status: number; errors: string[]; times: number }>();
  const namespaceIds = new Map<string, string>();
  const requests: RecordedRequest[] = [];
  let sealed = false;

  function mint(m: Mint): Token {
    const now = Date.now();
    const batch = m.type === 'batch';
    // Vault suffixes the token and the accessor of a namespaced token with the namespace's ID.
    if (m.namespace && !namespaceIds.has(m.namespace)) namespaceIds.set(m.namespace, random(5));
    const suffix = m.namespace ? `.${namespaceIds.get(m.namespace)}` : '';
    const token: Token = {
      token: (batch ? `hvb.${random(88)}` : `hvs.${random(24)}`) + suffix,
      accessor: batch ? '' : random(24) + suffix,
      policies: m.policies,
      meta: m.meta ?? {},
      displayName: m.displayName ?? 'token',
      ttlSeconds: m.ttl,
      explicitMaxTtlSeconds: m.explicitMax ?? 0,
      numUses: m.numUses ?? 0,
      renewable: (m.renewable ?? true) && m.ttl > 0 && !batch,
      orphan: m.parent === undefined,
      parentAccessor: m.parent?.accessor,
      namespace: m.namespace,
      expiresAtMs: m.ttl > 0 ? now + m.ttl * 1000 : Infinity,
      type: m.type ?? 'service',
      role: m.role,
      parent: m.parent?.token,
      path: m.path,
      entityId: m.entityId ?? '',
      issuedAtMs: now,
      periodSeconds: m.period ?? 0,
      limitedUses: (m.numUses ?? 0) > 0,
      login: m.login,
    };
    tokens.set(token.token, token);
    if (token.accessor) accessors.set(token.accessor, token);
    return token;
  }
  const root = mint({ policies: ['root'], ttl: 0, namespace: '', path: 'auth/token/root' });
  root.displayName = 'root';

  /** Revokes a token, its non-orphan descendants, and the leases each of them created. */
  function revokeToken(t: Token, reason: 'api' | 'expired'): void {
    if (tokens.get(t.token) !== t) return;
    tokens.delete(t.token);
    accessors.delete(t.accessor);
    for (const child of [...tokens.values()]) if (child.parent === t.token) revokeToken(child, reason);
    for (const lease of leases.values()) {
      if (lease.token !== t.token || lease.ended) continue;
      lease.ended = true;
      lease.revoked = reason === 'api';
    }
  }

  /** Time is evaluated lazily: before anything reads state, whatever has run out of time is gone. */
  function sweep(): void {
    const now = Date.now();
    for (const t of [...tokens.values()]) if (t.expiresAtMs <= now) revokeToken(t, 'expired');
    for (const lease of leases.values()) if (lease.expiresAtMs <= now) lease.ended = true;
  }

  /** The capabilities a token's policies grant on a path: those of the single highest-priority rule. */
  function capabilities(t: Token, path: string): Set<string> {
    if (t.policies.includes('root')) return new Set([...CAPABILITIES].filter((c) => c !== 'deny'));
    const merged = new Map<string, Set<string>>(); // the same path in several policies: their union
    for (const name of t.policies) {
      for (const rule of policies.get(name) ?? []) {
        merged.set(rule.path, new Set([...(merged.get(rule.path) ?? []), ...rule.capabilities]));
      }
    }
    const exact = merged.get(path);
    if (exact && !isWildcard(path)) return exact;
    let best: string | undefined;
    for (const pattern of merged.keys()) {
      if (!isWildcard(pattern) || !matches(pattern, path)) continue;
      if (!best || lowerPriority(best, pattern)) best = pattern;
    }
    return (best && merged.get(best)) || new Set();
  }
  function sudo(t: Token, path: string): boolean {
    const caps = capabilities(t, path);
    return caps.has('sudo') && !caps.has('deny');
  }
  /** A token from a parent namespace is checked against the path as seen from its own namespace. */
  const aclPath = (t: Token, ns: string, path: string) =>
    t.namespace === ns ? path : `${ns.slice(t.namespace ? t.namespace.length + 1 : 0)}/${path}`;
  /** Lookups only see tokens of the request's namespace and of its children. */
  const visible = (t: Token | undefined, ns: string) => (t && usableIn(ns, t.namespace) ? t : undefined);

  /** framework.CalculateTTL, same arguments: the TTL to grant, capped so it never passes the max TTL. */
  function calculateTtl(
    increment: number,
    backendTtl: number,
    period: number,
    backendMax: number,
    explicitMax: number,
    startMs: number,
    warnings: string[],
  ): number {
    let maxTtl = SYSTEM_TTL;
    if (backendMax > 0 && backendMax < maxTtl) maxTtl = backendMax;
    if (explicitMax > 0 && explicitMax < maxTtl) maxTtl = explicitMax;
    const start = Math.floor(startMs / 1000); // Vault truncates every time to the second first
    let ttl = increment > 0 ? increment : backendTtl > 0 ? backendTtl : SYSTEM_TTL;
    let maxValid: number | undefined = start + maxTtl;
    if (period > 0) {
      ttl = Math.min(period, maxTtl);
      maxValid = explicitMax > 0 ? start + explicitMax : undefined;
    }
    if (maxValid === undefined) return ttl;
    const left = maxValid - Math.floor(Date.now() / 1000);
    if (left <= 0) throw fail(400, 'past the max TTL, cannot renew');
    if (ttl > left) {
      const [asked, max, capped] = [goDuration(ttl), goDuration(left), 'TTL value is capped accordingly'];
      warnings.push(`TTL of "${asked}" exceeded the effective max_ttl of "${max}"; ${capped}`);
      ttl = left;
    }
    return ttl;
  }

  const authBlock = (t: Token, leaseDuration = t.ttlSeconds) => ({
    client_token: t.token,
    accessor: t.accessor,
    policies: t.policies,
    token_policies: t.policies,
    metadata: Object.keys(t.meta).length ? t.meta : null,
    lease_duration: leaseDuration,
    renewable: t.renewable,
    entity_id: t.entityId,
    token_type: t.type,
    orphan: t.orphan,
    mfa_requirement: null,
    num_uses: t.numUses,
  });
  const authReply = (mountType: string, t: Token, warnings: string[], leaseDuration?: number) =>
    ok(mountType, { auth: authBlock(t, leaseDuration), warnings: warnings.length ? warnings : null });

  /** A non-expiring token has no lease in Vault, so its lookup has no issue_time and no renewable. */
  function lookupData(t: Token, withId: boolean): Body {
    const data: Body = {
      accessor: t.accessor,
      creation_time: Math.floor(t.issuedAtMs / 1000),
      creation_ttl: t.ttlSeconds,
      display_name: t.displayName,
      entity_id: t.entityId,
      expire_time: null,
      explicit_max_ttl: t.explicitMaxTtlSeconds,
      id: withId ? t.token : '',
      meta: Object.keys(t.meta).length ? t.meta : null,
      num_uses: t.numUses,
      orphan: t.orphan,
      path: t.path,
      policies: t.policies,
      ttl: 0,
      type: t.type,
    };
    if (t.role) data.role = t.role;
    if (t.periodSeconds) data.period = t.periodSeconds;
    if (t.namespace) data.namespace_path = `${t.namespace}/`;
    if (t.expiresAtMs === Infinity) return data;
    Object.assign(data, { expire_time: iso(t.expiresAtMs), ttl: remaining(t.expiresAtMs) });
    Object.assign(data, { issue_time: iso(t.issuedAtMs), renewable: t.renewable });
    if (t.lastRenewalMs) {
      data.last_renewal_time = Math.floor(t.lastRenewalMs / 1000);
      data.last_renewal = iso(t.lastRenewalMs);
    }
    return data;
  }

  /** What a login sees: logins need no token, so there is no caller. */
  interface LoginCtx {
    ns: string;
    path: string;
    body: Body;
    match: RegExpExecArray;
  }
  interface Ctx extends LoginCtx {
    caller: Token;
  }

  /** auth/token/create[/:role_name], following Vault's TokenStore.handleCreateCommon. */
  function createToken({ caller: parent, ns, path, body: b, match }: Ctx): Reply {
    const roleName = match[1];
    const role = roleName === undefined ? undefined : tokenRoles.get(roleName);
    if (roleName !== undefined && !role) throw fail(400, `unknown role ${roleName}`);
    if (parent.type === 'batch') throw fail(400, 'batch tokens cannot create more tokens');
    if (parent.limitedUses) throw fail(400, 'restricted use token cannot generate child tokens');
    const isSudo = sudo(parent, aclPath(parent, ns, path));
    const requested = names(b.policies);
    const noDefault = bool(b.no_default_policy, false);
    const numUses = integer(b.num_uses);
    const explicitMax = seconds(b.explicit_max_ttl) ?? 0;
    const period = seconds(b.period) ?? 0;
    const ttl = seconds(b.ttl) ?? 0;
    let renewable = bool(b.renewable, true) && (role?.renewable ?? true);
    if (ns !== parent.namespace && !isSudo) {
      throw fail(400, 'root or sudo privileges required to directly generate a token in a child namespace');
    }
    if (ns !== parent.namespace && requested.includes('root')) {
      throw fail(400, 'root tokens may not be created from a parent namespace');
    }
    const forced = role?.tokenType === 'service' || role?.tokenType === 'batch' ? role.tokenType : undefined;
    const typeName = forced ?? str(b.type);
    if (!['', 'service', 'batch'].includes(typeName)) throw fail(400, "invalid 'token_type' value");
    const batch = typeName === 'batch';
    if (batch) {
      const bad = explicitMax ? 'explicit_max_ttl' : numUses ? 'num_uses' : period ? 'period' : undefined;
      if (bad) throw fail(400, `batch tokens cannot have "${bad}" set`);
      renewable = false;
    }
    if (numUses < 0) throw fail(400, 'number of uses cannot be negative');
    if (explicitMax < 0) throw fail(400, 'explicit_max_ttl must be positive');
    if (period < 0) throw fail(400, 'period must be positive');
    if (period > 0 && !isSudo) throw fail(400, 'root or sudo privileges required to create periodic token');
    if (ttl < 0) throw fail(400, 'ttl must be positive');

    let chosen = requested;
    let addDefault = false;
    if (role && role.allowedPolicies.length > 0) {
      // A role's allowed_policies replace the "subset of the parent's policies" rule.
      const allowed = sanitizePolicies(role.allowedPolicies, !noDefault);
      chosen = requested.length ? sanitizePolicies(requested, !noDefault) : allowed;
      if (!isSubset(allowed, chosen)) {
        const why = `token policies (${goList(chosen)}) must be subset of the role's allowed policies`;
        throw fail(400, `${why} (${goList(allowed)})`);
      }
    } else if (ns !== parent.namespace) {
      addDefault = !noDefault;
    } else if (requested.length === 0) {
      chosen = sanitizePolicies(parent.policies, false); // inherits default only if the parent has it
    } else if (!isSudo) {
      if (!isSubset(sanitizePolicies(parent.policies, false), sanitizePolicies(requested, false))) {
        throw fail(400, 'child policies must be subset of parent');
      }
      addDefault = !noDefault && parent.policies.includes('default');
    } else {
      addDefault = !noDefault;
    }
    const finalPolicies = sanitizePolicies(chosen, addDefault).filter((p) => !noDefault || p !== 'default');
    if (finalPolicies.includes('root') && !parent.policies.includes('root')) {
      throw fail(400, 'root tokens may not be created without parent token being root');
    }
    if (finalPolicies.includes('root') && batch) throw fail(400, 'batch tokens cannot be root tokens');

    let orphan = role?.orphan ?? false;
    if (!role && bool(b.no_parent, false)) {
      if (!isSudo) throw fail(400, 'root or sudo privileges required to create orphan token');
      orphan = true;
    }
    const warnings: string[] = [];
    let granted = ttl;
    if (period > 0 || ttl > 0 || !finalPolicies.includes('root')) {
      granted = calculateTtl(0, ttl, period, 0, explicitMax, Date.now(), warnings);
    }
    if (granted === 0 && explicitMax > 0) granted = explicitMax; // root tokens are still bound by it
    if (granted === 0 && parent.expiresAtMs !== Infinity) {
      throw fail(400, 'expiring root tokens cannot create non-expiring root tokens');
    }
    let displayName = 'token';
    if (str(b.display_name)) {
      displayName = `token-${str(b.display_name)}`.replace(/[^a-zA-Z0-9-]+/g, '-').replace(/-$/, '');
    }
    const t = mint({
      policies: finalPolicies,
      ttl: granted,
      path,
      namespace: ns,
      renewable,
      meta: stringMap(b.meta),
      displayName,
      numUses,
      type: batch ? 'batch' : 'service',
      explicitMax,
      period,
      parent: orphan ? undefined : parent,
      role: roleName,
      entityId: orphan ? '' : parent.entityId,
    });
    for (const p of t.policies.filter((name) => name !== 'root' && !policies.has(name))) {
      warnings.push(`Policy "${p}" does not exist`);
    }
    return authReply('token', t, warnings);
  }

  /** A successful login: an orphan service token with the role's policies plus default. */
  function login(
    c: LoginCtx,
    role: LoginRole,
    mount: 'approle' | 'jwt',
    meta: Record<string, string>,
    who = '',
  ) {
    const warnings: string[] = [];
    const t = mint({
      policies: sanitizePolicies(role.policies, true),
      ttl: calculateTtl(0, role.ttl, 0, role.maxTtl, 0, Date.now(), warnings),
      path: `auth/${mount}/login`,
      namespace: c.ns,
      meta,
      displayName: who ? `${mount}-${who}` : mount, // Vault prefixes the mount path
      entityId: role.entity,
      login: { ttl: role.ttl, maxTtl: role.maxTtl },
    });
    return authReply(mount, t, warnings);
  }

  function renewSelf({ caller: t, body }: Ctx): Reply {
    if (t.type === 'batch') throw fail(400, 'batch tokens cannot be renewed');
    if (t.expiresAtMs === Infinity || !t.renewable) throw fail(400, 'lease is not renewable');
    const warnings: string[] = [];
    const increment = seconds(body.increment) ?? 0;
    // A login token renews under its role's ttl and max_ttl, since Vault lets the auth method decide.
    const [ttlFrom, maxFrom] = t.login ? [t.login.ttl, t.login.maxTtl] : [t.ttlSeconds, 0];
    const { periodSeconds: period, explicitMaxTtlSeconds: explicitMax, issuedAtMs } = t;
    const ttl = calculateTtl(increment, ttlFrom, period, maxFrom, explicitMax, issuedAtMs, warnings);
    t.lastRenewalMs = Date.now();
    t.expiresAtMs = t.lastRenewalMs + ttl * 1000;
    return authReply('token', t, warnings, ttl);
  }

  function databaseCreds({ caller, match }: Ctx): Reply {
    const name = match[1] ?? '';
    const ttl = databaseRoles.get(name);
    if (ttl === undefined) throw fail(400, `unknown role: ${name}`);
    const now = Date.now();
    // A batch token's leases cannot outlive it: Vault caps them at its expiry.
    const cap = caller.type === 'batch' ? caller.expiresAtMs : Infinity;
    const lease: Lease = {
      leaseId: `database/creds/${name}/${random(24)}`,
      issuedAtMs: now,
      expiresAtMs: Math.min(now + (ttl || SYSTEM_TTL) * 1000, cap),
      username: `v-token-${name}-${random(20)}`,
      token: caller.token,
      ended: false,
      revoked: false,
    };
    leases.set(lease.leaseId, lease);
    return ok('database', {
      lease_id: lease.leaseId,
      renewable: true,
      lease_duration: remaining(lease.expiresAtMs),
      data: { username: lease.username, password: random(20) },
    });
  }

  function jwtLogin(c: LoginCtx): Reply {
    if (!str(c.body.jwt)) throw fail(400, 'missing token');
    if (!str(c.body.role)) throw fail(400, 'missing role');
    const role = jwtRoles.get(str(c.body.role));
    if (!role) throw fail(400, `role "${str(c.body.role)}" could not be found`);
    if (role.secret !== c.body.jwt) throw fail(400, BAD_JWT);
    let subject = role.name; // Vault names the token after the role's user claim, sub by default
    try {
      const claims = JSON.parse(Buffer.from(role.secret.split('.')[1] ?? '', 'base64url').toString());
      if (typeof claims?.sub === 'string') subject = claims.sub;
    } catch {
      // not a decodable JWT: the role name will do
    }
    return login(c, role, 'jwt', { role: role.name }, subject);
  }

  function revokeByToken({ caller, ns, body, match }: Ctx): Reply {
    const self = match[1] !== undefined;
    if (!self && !str(body.token)) throw fail(400, 'missing token ID');
    const t = self ? caller : visible(tokens.get(str(body.token)), ns);
    if (t?.type === 'batch') throw fail(400, 'batch tokens cannot be revoked');
    if (t) revokeToken(t, 'api'); // an unknown token: 204 all the same
    return NO_CONTENT;
  }

  function byAccessor({ ns, body }: Ctx): Token | undefined {
    if (!str(body.accessor)) throw fail(400, 'missing accessor');
    return visible(accessors.get(str(body.accessor)), ns);
  }

  type Route = { pattern: RegExp; ops: Op[] } & (
    { login: (c: LoginCtx) => Reply; handle?: never } | { handle: (c: Ctx) => Reply; login?: never }
  );
  const routes: Route[] = [
    { pattern: /^auth\/token\/create(?:\/([^/]+))?$/, ops: ['update'], handle: createToken },
    {
      pattern: /^auth\/token\/lookup-self$/,
      ops: ['read', 'update'],
      handle: (c) => ok('token', { data: lookupData(c.caller, true) }),
    },
    { pattern: /^auth\/token\/renew-self$/, ops: ['update'], handle: renewSelf },
    {
      pattern: /^auth\/token\/lookup$/,
      ops: ['update'],
      handle: (c) => {
        // No token given: Vault looks up the caller's own.
        const t = visible(tokens.get(str(c.body.token) || c.caller.token), c.ns);
        if (!t) throw fail(403, 'bad token');
        return ok('token', { data: lookupData(t, true) });
      },
    },
    {
      pattern: /^auth\/token\/lookup-accessor$/,
      ops: ['update'],
      handle: (c) => {
        const t = byAccessor(c);
        if (!t) throw fail(400, 'invalid accessor');
        return ok('token', { data: lookupData(t, false) });
      },
    },
    {
      pattern: /^auth\/token\/revoke-accessor$/,
      ops: ['update'],
      handle: (c) => {
        const t = byAccessor(c);
        if (t) revokeToken(t, 'api'); // an unknown accessor: 204 as well, since Vault 1.10
        return NO_CONTENT;
      },
    },
    { pattern: /^auth\/token\/revoke(-self)?$/, ops: ['update'], handle: revokeByToken },
    {
      pattern: /^auth\/approle\/login$/,
      ops: ['update'],
      login: (c) => {
        if (!str(c.body.role_id)) throw fail(400, 'missing role_id');
        if (!str(c.body.secret_id)) throw fail(400, 'missing secret_id');
        const role = appRoles.get(str(c.body.role_id));
        if (!role || role.secret !== c.body.secret_id) throw fail(400, 'invalid role or secret ID');
        return login(c, role, 'approle', { role_name: role.name });
      },
    },
    { pattern: /^auth\/jwt\/login$/, ops: ['update'], login: jwtLogin },
    { pattern: /^database\/creds\/([^/]+)$/, ops: ['read'], handle: databaseCreds },
    {
      pattern: /^kv\/(.+)$/,
      ops: ['read'],
      handle: ({ match }) => {
        const data = kv.get(match[1] ?? '');
        if (!data) throw fail(404); // Vault's read of nothing: 404 with an empty errors list
        return ok('kv', { lease_duration: SYSTEM_TTL, data: { ...data } });
      },
    },
    {
      pattern: /^sys\/leases\/lookup$/,
      ops: ['update'],
      handle: ({ body }) => {
        const id = str(body.lease_id);
        if (!id) throw fail(400, 'lease_id must be specified');
        const lease = leases.get(id);
        if (!lease || lease.ended) throw fail(400, 'invalid lease');
        const data = { id, issue_time: iso(lease.issuedAtMs), expire_time: iso(lease.expiresAtMs) };
        return ok('system', {
          data: { ...data, last_renewal: null, renewable: true, ttl: remaining(lease.expiresAtMs) },
        });
      },
    },
    {
      // The lease ID may also come in the URL; the body's wins, as in Vault.
      pattern: /^sys\/leases\/revoke(?:\/(.+))?$/,
      ops: ['update'],
      handle: ({ body, match }) => {
        const id = str(body.lease_id) || (match[1] ?? '');
        if (!id) throw fail(400, 'lease_id must be specified');
        const lease = leases.get(id);
        if (lease && !lease.ended) Object.assign(lease, { ended: true, revoked: true }); // unknown: 204 too
        return NO_CONTENT;
      },
    },
  ];

  function dispatch(r: RecordedRequest, bodyError: string | undefined, list: boolean): Reply {
    const injected = failures.get(r.path);
    if (injected) {
      if (--injected.times <= 0) failures.delete(r.path);
      throw fail(injected.status, ...injected.errors);
    }
    if (sealed) throw fail(503, 'Vault is sealed');
    if (bodyError) throw fail(400, bodyError);
    const op: Op | undefined = r.method === 'GET' && list ? 'list' : OPERATIONS[r.method];
    if (!op) throw fail(405);
    sweep();
    const ns = normalizeNamespace(r.namespace);
    const route = routes.find((candidate) => candidate.pattern.test(r.path));
    const match = route?.pattern.exec(r.path);
    const body = (r.body ?? {}) as Body;
    if (route?.login && match) {
      if (!route.ops.includes(op)) throw fail(405, UNSUPPORTED_OPERATION);
      return route.login({ ns, path: r.path, body, match });
    }
    const caller = r.token === undefined ? undefined : tokens.get(r.token);
    if (!caller || !usableIn(caller.namespace, ns)) throw fail(403, DENIED);
    // Vault spends a use before checking the ACL, and revokes the token after the request that used it up.
    const lastUse = caller.numUses > 0 && --caller.numUses === 0;
    try {
      const caps = capabilities(caller, aclPath(caller, ns, r.path));
      const allowed = op === 'update' ? caps.has('update') || caps.has('create') : caps.has(op);
      if (caps.has('deny') || !allowed) throw fail(403, DENIED);
      if (!route?.handle || !match) throw fail(404, UNSUPPORTED_PATH);
      if (!route.ops.includes(op)) throw fail(405, UNSUPPORTED_OPERATION);
      return route.handle({ caller, ns, path: r.path, body, match });
    } finally {
      if (lastUse) revokeToken(caller, 'api');
    }
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://fake-vault');
    const header = (name: string) => [req.headers[name]].flat()[0];
    let body: any;
    let bodyError: string | undefined;
    if (raw.trim() !== '') {
      // Vault parses JSON whatever the Content-Type; it reads a form only when one is sent as such.
      const form = /^application\/x-www-form-urlencoded/i.test(header('content-type') ?? '');
      try {
        if (form && !raw.trimStart().startsWith('{')) throw new Error('form bodies are not supported here');
        body = JSON.parse(raw);
        if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('not a map');
      } catch (error) {
        body = raw;
        bodyError = `failed to parse JSON input: ${(error as Error).message}`;
      }
    }
    const recorded: RecordedRequest = {
      method: req.method ?? '',
      path: url.pathname.replace(/^\/v1\//, ''),
      token: header('x-vault-token'),
      namespace: header('x-vault-namespace'),
      body,
      atMs: Date.now(),
    };
    requests.push(recorded);
    try {
      if (!url.pathname.startsWith('/v1/')) throw fail(404);
      const reply = dispatch(recorded, bodyError, url.searchParams.get('list') === 'true');
      send(res, reply.status, reply.status === 200 ? reply.body : undefined);
    } catch (error) {
      if (error instanceof VaultError) send(res, error.status, { errors: error.errors });
      else send(res, 500, { errors: [`1 error occurred:\n\t* ${String(error)}\n\n`] });
    }
  }

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    handle(req, res).catch(() => res.destroy());
  };
  const server = options.tls ? https.createServer(options.tls, onRequest) : http.createServer(onRequest);
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  let port = 0;
  const start = () =>
    new Promise<void>((resolve, reject) => {
      if (server.listening) return resolve();
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        port = (server.address() as AddressInfo).port;
        resolve();
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  await start();

  /** A copy, so a test cannot change the server's state by mutating what it was given. */
  const info = (t: Token | undefined): TokenInfo | undefined =>
    t && {
      token: t.token,
      accessor: t.accessor,
      policies: [...t.policies],
      meta: { ...t.meta },
      displayName: t.displayName,
      ttlSeconds: t.ttlSeconds,
      explicitMaxTtlSeconds: t.explicitMaxTtlSeconds,
      numUses: t.numUses,
      renewable: t.renewable,
      orphan: t.orphan,
      parentAccessor: t.parentAccessor,
      namespace: t.namespace,
      expiresAtMs: t.expiresAtMs,
      type: t.type,
      role: t.role,
    };
  const loginRole = (o: LoginRoleOptions, secret: string, name: string): LoginRole => ({
    ...{ secret, name, policies: [...o.policies], ttl: o.ttlSeconds, maxTtl: o.maxTtlSeconds },
    entity: randomUUID(), // Vault gives every login an identity entity
  });

  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    rootToken: root.token,
    requests,
    setPolicy(name, rules) {
      if (name === 'root') throw new Error('cannot update the root policy');
      for (const rule of rules) {
        const unknown = rule.capabilities.filter((c) => !CAPABILITIES.has(c));
        if (unknown.length) throw new Error(`unknown capabilities ${unknown.join(', ')} on ${rule.path}`);
      }
      policies.set(
        name,
        rules.map((rule) => ({ path: rule.path, capabilities: [...rule.capabilities] })),
      );
    },
    createToken(o) {
      const chosen = sanitizePolicies(o.policies, true);
      const explicitMax = o.explicitMaxTtlSeconds ?? 0;
      let ttl = Math.min(o.ttlSeconds ?? (chosen.includes('root') ? 0 : SYSTEM_TTL), SYSTEM_TTL);
      if (explicitMax > 0 && (ttl === 0 || ttl > explicitMax)) ttl = explicitMax;
      const namespace = normalizeNamespace(o.namespace);
      const { renewable } = o;
      const t = mint({ policies: chosen, ttl, path: 'auth/token/create', namespace, renewable, explicitMax });
      return { token: t.token, accessor: t.accessor };
    },
    addTokenRole(name, o) {
      const tokenType = o.tokenType ?? 'default-service';
      const orphan = o.orphan ?? false;
      if (tokenType === 'batch' && !orphan) {
        throw new Error("'token_type' cannot be 'batch' when role is set to generate non-orphan tokens");
      }
      const allowedPolicies = sanitizePolicies(o.allowedPolicies ?? [], false);
      tokenRoles.set(name, { allowedPolicies, orphan, tokenType, renewable: tokenType !== 'batch' });
    },
    addAppRole: (o) => void appRoles.set(o.roleId, loginRole(o, o.secretId, o.roleName ?? o.roleId)),
    addJwtRole: (o) => void jwtRoles.set(o.role, loginRole(o, o.jwt, o.role)),
    addDatabaseRole: (name, o) => void databaseRoles.set(name, o.defaultTtlSeconds),
    putKv: (path, data) => void kv.set(path.replace(/^\/*(kv\/)?|\/+$/g, ''), { ...data }),
    token: (token) => (sweep(), info(tokens.get(token))),
    tokenByAccessor: (accessor) => (sweep(), info(accessors.get(accessor))),
    lease(leaseId) {
      sweep();
      const lease = leases.get(leaseId);
      if (!lease) return undefined;
      return { leaseId, expiresAtMs: lease.expiresAtMs, revoked: lease.revoked, username: lease.username };
    },
    liveLease: (leaseId) => (sweep(), leases.get(leaseId)?.ended === false),
    failNext(path, status, errors, times = 1) {
      failures.set(path.replace(/^\/?(v1\/)?/, ''), { status, errors: [...errors], times });
    },
    seal: () => void (sealed = true),
    unseal: () => void (sealed = false),
    stop,
    start,
    close: stop,
  };
}
