import { isSettled, type Lease } from '../domain/types';
import type { LeaseSelector } from '../leases/lease-store';
import type { BrokerDeps } from './deps';

const REVOKE_CHUNK = 500;

export interface RevocationSummary {
  matched: number;
  revoked: number;
  byGrant: Record<string, number>;
  byProvider: Record<string, number>;
  leaseIds: string[];
}

/**
 * Starts revocation of unsettled leases: each moves to `revoking` (and becomes due now, so the sweeper
 * covers a lost job), then a `revoke-<lease>` job runs at once. Settling is the worker's.
 */
export async function requestRevocation(
  deps: Pick<BrokerDeps, 'leases' | 'queue' | 'nowMs'>,
  leases: readonly Lease[],
  reason: string,
  actor: string,
  options: { dryRun?: boolean; force?: boolean } = {},
): Promise<RevocationSummary> {
  const live = leases.filter((lease) => !isSettled(lease.state));
  const byGrant: Record<string, number> = {};
  const byProvider: Record<string, number> = {};
  for (const lease of live) {
    byGrant[lease.grant] = (byGrant[lease.grant] ?? 0) + 1;
    byProvider[lease.provider] = (byProvider[lease.provider] ?? 0) + 1;
  }
  if (options.dryRun)
    return { matched: live.length, revoked: 0, byGrant, byProvider, leaseIds: live.map((l) => l.id) };

  const nowMs = deps.nowMs();
  const started: Lease[] = [];
  const request = { reason, nowMs, force: options.force };
  // Each lease's `lease.revoke_requested` goes in with its transition (markRevoking), never after the
  // batch: a process killed mid-batch leaves no lease revoking without it.
  const event = (lease: Lease) => ({
    type: 'lease.revoke_requested' as const,
    atMs: nowMs,
    ...leaseAuditFields(lease),
    actor,
    reason,
    ...(options.force ? { detail: { force: true } } : {}),
  });
  // In chunks, each chunk's transitions in flight together: 10,000 leases take seconds, not minutes.
  for (let i = 0; i < live.length; i += REVOKE_CHUNK) {
    const chunk = live.slice(i, i + REVOKE_CHUNK);
    const results = await Promise.all(
      chunk.map((lease) => deps.leases.markRevoking(lease.id, request, event(lease))),
    );
    // 'forced': a lease already revoking, now marked for force: audited as this caller's request too.
    chunk.forEach(
      (lease, index) => ['started', 'forced'].includes(results[index] as string) && started.push(lease),
    );
  }
  // Leases already revoking are queued again too: a no-op if their job is still there, a rescue if not.
  const requeue = live.filter((lease) => lease.state === 'revoking').map((lease) => lease.id);
  await deps.queue.revokeNow([...new Set([...started.map((lease) => lease.id), ...requeue])]);
  // One WAIT for the whole batch: the transitions and their jobs are on the replicas before it counts
  // (a NotReplicatedError is 503 not_replicated; repeating the call is safe).
  await deps.leases.confirmWrites();
  const leaseIds = started.map((lease) => lease.id);
  return { matched: live.length, revoked: started.length, byGrant, byProvider, leaseIds };
}

/** Who and what a lease's audit events name. */
export const leaseAuditFields = (lease: Lease) => ({
  issuer: lease.issuer,
  subject: lease.subject,
  task: lease.taskId,
  grant: lease.grant,
  lease: lease.id,
});

export async function selectLeases(
  deps: Pick<BrokerDeps, 'leases'>,
  selector: LeaseSelector,
): Promise<Lease[]> {
  return deps.leases.getMany(await deps.leases.selectIds(selector));
}

/**
 * A credential minted for a caller that hung up before it was returned: nobody holds it, so its lease is
 * revoked at once (audited as `lease.revoke_requested` by the broker itself).
 */
export async function revokeUnreturned(
  deps: Pick<BrokerDeps, 'leases' | 'queue' | 'nowMs'>,
  leaseId: string,
): Promise<void> {
  const lease = await deps.leases.get(leaseId);
  if (lease)
    await requestRevocation(
      deps,
      [lease],
      'the caller disconnected before the credential was returned',
      'broker',
    );
}
