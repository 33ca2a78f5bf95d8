import type { AdminRole, Config } from '../config/schema';
import type { Identity } from '../domain/types';

/** What each admin call needs. `admin` holds every role. */
export type AdminPermission = 'view' | 'revoke' | 'approve';
const GRANTS: Record<AdminRole, readonly AdminPermission[]> = {
  viewer: ['view'],
  revoker: ['view', 'revoke'],
  approver: ['view', 'approve'],
  admin: ['view', 'revoke', 'approve'],
};

export function adminPermissions(config: Pick<Config, 'admins'>, identity: Identity): Set<AdminPermission> {
  const out = new Set<AdminPermission>();
  for (const entry of config.admins) {
    if (entry.issuer === identity.issuer && entry.subjects.includes(identity.subject)) {
      for (const role of entry.roles) GRANTS[role].forEach((permission) => out.add(permission));
    }
  }
  return out;
}

/**
 * Which token audiences the caller may introspect: every one (an admin with `view`, or a resource server
 * configured without `audiences`), the listed ones, or none (null: not allowed to introspect at all).
 */
export function introspectableAudiences(
  config: Pick<Config, 'admins' | 'resourceServers'>,
  identity: Identity,
): 'all' | Set<string> | null {
  if (adminPermissions(config, identity).has('view')) return 'all';
  const entries = config.resourceServers.filter(
    (entry) => entry.issuer === identity.issuer && entry.subjects.includes(identity.subject),
  );
  if (entries.length === 0) return null;
  if (entries.some((entry) => !entry.audiences)) return 'all';
  return new Set(entries.flatMap((entry) => entry.audiences ?? []));
}
