import type { Config } from '../config/schema';
import { isBreakGlassCaller, type AdminCaller, type AdminRole, type Identity } from '../domain/types';

/** What each admin call needs. `admin` holds every role. */
export type AdminPermission = 'view' | 'revoke' | 'approve';
const GRANTS: Record<AdminRole, readonly AdminPermission[]> = {
  viewer: ['view'],
  revoker: ['view', 'revoke'],
  approver: ['view', 'approve'],
  admin: ['view', 'revoke', 'approve'],
};

/** A break-glass caller holds its entry's roles; anyone else the roles of every `admins` entry naming it. */
export function adminPermissions(config: Pick<Config, 'admins'>, caller: AdminCaller): Set<AdminPermission> {
  const roles: AdminRole[] = isBreakGlassCaller(caller)
    ? [...caller.roles]
    : config.admins
        .filter((entry) => entry.issuer === caller.issuer && entry.subjects.includes(caller.subject))
        .flatMap((entry) => entry.roles);
  return new Set(roles.flatMap((role) => GRANTS[role]));
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
