import { BrokerError } from '../domain/errors';
import { isSettled, type Lease } from '../domain/types';
import type { BrokerDeps } from './deps';
import { requestRevocation, type RevocationSummary } from './request-revocation';

/** At most this many irrevocable lease ids in a progress answer: enough to act on, bounded in size. */
const LISTED_IRREVOCABLE = 100;

export interface RevocationProgress {
  revocationId: string;
  /** Leases the revocation matched (unsettled when it started). */
  total: number;
  /** revoked, expired, force-closed, or purged since (purge only deletes settled leases). */
  settled: number;
  irrevocable: number;
  /** Still active or revoking: the worker has not finished with them. */
  pending: number;
  /** Pending leases whose revocation failed at least once and is being retried. */
  retrying: number;
  byState: Record<string, number>;
  irrevocableLeaseIds: string[];
}

/**
 * An admin revocation its caller can follow: the matched leases are recorded under a new id first (if that
 * write fails, nothing has started), then revocation starts as for any other request. A dry run records
 * nothing.
 */
export async function startRevocation(
  deps: Pick<BrokerDeps, 'leases' | 'queue' | 'audit' | 'revocations' | 'nowMs' | 'newId'>,
  leases: readonly Lease[],
  reason: string,
  actor: string,
  options: { dryRun?: boolean; force?: boolean } = {},
): Promise<RevocationSummary & { revocationId?: string }> {
  if (options.dryRun) return requestRevocation(deps, leases, reason, actor, options);
  const revocationId = deps.newId();
  const matched = leases.filter((lease) => !isSettled(lease.state)).map((lease) => lease.id);
  await deps.revocations.record(revocationId, matched);
  return { ...(await requestRevocation(deps, leases, reason, actor, options)), revocationId };
}

/** Where a revocation stands: its leases counted by state now, inside Redis (no lease body is read). */
export async function revocationProgress(
  deps: Pick<BrokerDeps, 'revocations'>,
  revocationId: string,
): Promise<RevocationProgress> {
  const leaseIds = await deps.revocations.leaseIds(revocationId);
  if (!leaseIds) throw new BrokerError('not_found', 'no such revocation (revocations are kept for a day)');
  const { byState, retrying, irrevocableLeaseIds } = await deps.revocations.countStates(
    leaseIds,
    LISTED_IRREVOCABLE,
  );
  const irrevocable = byState.irrevocable ?? 0;
  const pending = (byState.active ?? 0) + (byState.revoking ?? 0);
  return {
    revocationId,
    total: leaseIds.length,
    settled: leaseIds.length - irrevocable - pending,
    irrevocable,
    pending,
    retrying,
    byState,
    irrevocableLeaseIds,
  };
}
