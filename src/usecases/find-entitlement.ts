import type { GrantConfig } from '../config/schema';
import type { Identity } from '../domain/types';
import { matchesSubjectPattern } from '../entitlements/subject-pattern';
import type { EntitlementFacts } from '../policy/vocabulary';
import type { BrokerDeps } from './deps';
import { describeEntitlements } from './read-entitlements';

type Deps = Pick<BrokerDeps, 'approvals' | 'entitlements'>;

/**
 * Entitlements cost Redis reads, so they are looked up only when the grant requires one or a policy in
 * force reads `context.entitled` or `context.entitlement` (or `context` whole). Otherwise Cedar sees
 * `entitled: false`, which no policy reads: the hot path of ordinary grants makes no extra round trip.
 */
export const entitlementMatters = (policy: BrokerDeps['policy'], grant: Pick<GrantConfig, 'entitlement'>) =>
  grant.entitlement === 'required' || policy.readsContext('entitled') || policy.readsContext('entitlement');

/**
 * The workload's active entitlement to `grant` as of `nowMs`, or null. Read afresh on every request (no
 * cache), so an entitlement or enrolment that expires or is revoked stops issuance at once. With several,
 * the one that lasts longest (then the lowest id, so the choice is stable).
 */
export async function findEntitlement(
  deps: Deps,
  identity: Pick<Identity, 'issuer' | 'subject'>,
  grant: string,
  nowMs: number,
): Promise<EntitlementFacts | null> {
  const candidates = (await deps.entitlements.unexpiredForGrant(grant, nowMs)).filter(
    (entitlement) =>
      !entitlement.revokedAtMs &&
      entitlement.issuer === identity.issuer &&
      matchesSubjectPattern(entitlement.subjectPattern, identity.subject),
  );
  if (candidates.length === 0) return null;
  const active = (await describeEntitlements(deps, candidates, nowMs))
    .filter((described) => described.status === 'active')
    .sort(
      (a, b) =>
        b.entitlement.expiresAtMs - a.entitlement.expiresAtMs ||
        a.entitlement.id.localeCompare(b.entitlement.id),
    );
  const chosen = active[0];
  if (!chosen?.enrolment) return null;
  const { entitlement, enrolment } = chosen;
  return {
    id: entitlement.id,
    owner: entitlement.owner,
    purpose: entitlement.purpose,
    expiresInSeconds: Math.max(0, Math.floor((entitlement.expiresAtMs - nowMs) / 1000)),
    enrolment: { id: enrolment.enrolment.id, owner: enrolment.enrolment.owner },
  };
}
