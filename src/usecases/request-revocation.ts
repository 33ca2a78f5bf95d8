import type { Lease } from '../domain/types';
import type { LeaseSelector } from '../leases/lease-store';
import type { BrokerDeps } from './deps';

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
  deps: Pick<BrokerDeps, 'leases' | 'queue' | 'audit' | 'nowMs'>,
  leases: readonly Lease[],
  reason: string,
  actor: string,
  options: { dryRun?: boolean } = {},
): Promise<RevocationSummary> {
  const live = leases.filter((lease) => lease.state === 'active' || lease.state === 'irrevocable' || lease.state === 'revoking');
  const byGrant: Record<string, number> = {};
  const byProvider: Record<string, number> = {};
  for (const lease of live) {
    byGrant[lease.grant] = (byGrant[lease.grant] ?? 0) + 1;
    byProvider[lease.provider] = (byProvider[lease.provider] ?? 0) + 1;
  }
  if (options.dryRun) return { matched: live.length, revoked: 0, byGrant, byProvider, leaseIds: live.map((l) => l.id) };

  const nowMs = deps.nowMs();
  const started: string[] = [];
  for (const lease of live) {
    const state = await deps.leases.markRevoking(lease.id, reason, nowMs);
    // A lease already revoking has its job queued (or the sweeper re-queues it); queue again anyway, idempotently.
    if (state === 'revoking') started.push(lease.id);
  }
  await deps.queue.revokeNow(started);
  for (const lease of live.filter((l) => started.includes(l.id))) {
    await deps.audit.append({
      type: 'lease.revoke_requested', atMs: nowMs, issuer: lease.issuer, subject: lease.subject, task: lease.taskId,
      grant: lease.grant, lease: lease.id, actor, reason,
    });
  }
  return { matched: live.length, revoked: started.length, byGrant, byProvider, leaseIds: started };
}

export async function selectLeases(deps: Pick<BrokerDeps, 'leases'>, selector: LeaseSelector): Promise<Lease[]> {
  return deps.leases.getMany(await deps.leases.selectIds(selector));
}

