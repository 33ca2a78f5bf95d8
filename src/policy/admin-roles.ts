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

export const isResourceServer = (config: Pick<Config, 'resourceServers'>, identity: Identity): boolean =>
  config.resourceServers.some(
    (entry) => entry.issuer === identity.issuer && entry.subjects.includes(identity.subject),
  );
