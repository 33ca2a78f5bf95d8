import { isSettled, type Lease } from '../domain/types';
import { RevocationRefusedError } from '../providers/provider';
import type { LeaseAuditEvent } from '../leases/lease-store';
import { NotReplicatedError } from '../redis/durable-writes';
import type { WorkerDeps } from './deps';
import { leaseAuditFields } from './request-revocation';

export type SettleResult = 'settled' | 'already' | 'missing';

/**
 * The worker's half of revocation: ask the provider to revoke, then record what it really did. A lease
 * someone asked to revoke (task completed, admin, holder) settles as `revoked`; any other is being settled
 * because it expired, and settles as `expired` — by the API's clock, which scheduled the job, not the
 * worker's, which may differ a little.
 * Throws on a provider failure so the queue retries; on the final attempt, or at once when the provider
 * says retrying cannot help, the lease becomes irrevocable (listed, counted, and retried by the sweeper
 * later — never dropped). Each outcome's audit event is written by the lease store in the same step as the
 * outcome itself, so a worker killed between the two cannot leave one without the other.
 */
export async function settleLease(
  deps: Pick<WorkerDeps, 'config' | 'leases' | 'providers' | 'events' | 'nowMs'>,
  leaseId: string,
  attempt: { final: boolean },
): Promise<SettleResult> {
  const lease = await deps.leases.get(leaseId);
  if (!lease) {
    await deps.leases.forgetDue(leaseId);
    return 'missing';
  }
  if (isSettled(lease.state)) {
    // A retry after replicas did not confirm the settlement: it counts once they hold it (WAIT).
    await deps.leases.confirmWrites();
    return 'already';
  }
  const nowMs = deps.nowMs();
  const provider = deps.providers.get(lease.provider);
  const base = { atMs: nowMs, ...leaseAuditFields(lease), actor: 'worker' };
  let revocation: string;
  let detail: string | undefined;
  try {
    if (!provider) throw new Error(`provider ${lease.provider} is not configured in this process`);
    ({ revocation, detail } = await provider.revoke(lease, { nowMs }));
  } catch (error) {
    const message = (error as Error).message.slice(0, 500);
    // Read again: an admin may have asked for force while the backend was being tried.
    if (lease.forced || (await deps.leases.get(leaseId))?.forced)
      return forceClose(deps, lease, message, nowMs, base);
    // A refusal that retrying cannot change (permission denied) goes irrevocable at once, with its reason.
    const final = attempt.final || error instanceof RevocationRefusedError;
    deps.events.revocationFailed(leaseId, lease.provider, message, final);
    if (final) {
      const retryAtMs = nowMs + deps.config.revocation.irrevocableRetrySeconds * 1000;
      const failure = { error: message, nowMs, retryAtMs };
      const event = { type: 'lease.irrevocable' as const, ...base, reason: message };
      const marked = await deps.leases.markIrrevocable(leaseId, failure, event);
      // Once, when it becomes irrevocable (decided in Redis, so two jobs failing together page once); the
      // later retries that fail again do not page again.
      if (marked === 'became') deps.events.irrevocable(lease, message, nowMs);
    } else {
      const event = { type: 'lease.revoke_failed' as const, ...base, reason: message };
      await deps.leases.recordFailure(leaseId, message, event);
    }
    throw error;
  }
  const state: 'revoked' | 'expired' = lease.revokeReason ? 'revoked' : 'expired';
  const reason = lease.revokeReason ?? 'ttl';
  const event = {
    type: 'lease.settled' as const,
    ...base,
    reason,
    detail: { state, revocation, ...(detail ? { revocationDetail: detail } : {}) },
  };
  const outcome = { state, revocation, detail, reason };
  const { result, unconfirmed } = await settleOnce(deps, lease, outcome, nowMs, event);
  if (result !== 'settled') return result === 'missing' ? 'missing' : 'already';
  deps.events.settled(lease, state, nowMs);
  // Settled on the primary (and audited), not yet on the replicas: the job fails, and its retry confirms.
  if (unconfirmed) throw unconfirmed;
  return 'settled';
}

/** The settlement, and whether too few replicas confirmed it (it stands on the primary all the same). */
async function settleOnce(
  deps: Pick<WorkerDeps, 'leases'>,
  lease: Lease,
  outcome: Parameters<WorkerDeps['leases']['settle']>[1],
  nowMs: number,
  event: LeaseAuditEvent<'lease.settled' | 'lease.force_closed'>,
): Promise<{ result: string; unconfirmed?: NotReplicatedError }> {
  try {
    return { result: await deps.leases.settle(lease, outcome, nowMs, event) };
  } catch (error) {
    if (!(error instanceof NotReplicatedError)) throw error;
    return { result: String(error.result), unconfirmed: error };
  }
}

/**
 * An admin asked for `force` and the backend still refuses: the lease is closed anyway, as `force-closed`,
 * saying what failed and until when the credential may still work at its source. Never `revoked`.
 */
async function forceClose(
  deps: Pick<WorkerDeps, 'leases' | 'events'>,
  lease: Lease,
  failure: string,
  nowMs: number,
  base: Omit<LeaseAuditEvent<'lease.force_closed'>, 'type'>,
): Promise<SettleResult> {
  const untilMs = Number(lease.handle.notAfterMs) || lease.expiresAtMs;
  const detail =
    `closed by force although revocation failed (${failure}); the credential may still be valid at its ` +
    `source until ${new Date(untilMs).toISOString()}`;
  const reason = lease.revokeReason ?? 'forced';
  const outcome = { state: 'force-closed' as const, revocation: 'force-closed', detail, reason };
  const event = {
    type: 'lease.force_closed' as const,
    ...base,
    reason,
    detail: { state: 'force-closed', revocation: 'force-closed', revocationDetail: detail },
  };
  const { result, unconfirmed } = await settleOnce(deps, lease, outcome, nowMs, event);
  if (result !== 'settled') return result === 'missing' ? 'missing' : 'already';
  deps.events.settled(lease, 'force-closed', nowMs);
  if (unconfirmed) throw unconfirmed;
  return 'settled';
}
