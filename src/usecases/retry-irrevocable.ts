import type { Lease } from '../domain/types';
import type { BrokerDeps } from './deps';
import { leaseAuditFields } from './request-revocation';

const RETRY_CHUNK = 500;

export interface RetrySummary {
  /** Leases this call queued a retry for (they were irrevocable). */
  retried: Lease[];
  /** The others, with the state that prevented the retry ('missing' if the lease went meanwhile). */
  refused: { lease: Lease; state: string }[];
}

/**
 * On-call "retry now" for irrevocable leases: each gets the same `revoke-<lease>` job as any revocation, at
 * once, instead of waiting for the sweeper's retry time. The lease stays `irrevocable` until the worker
 * settles it: its `revokeReason` keeps the original request's meaning (`revoked` if someone had asked to
 * revoke it, `expired` if not), and a retry that fails again does not page again. The retry is audited as
 * its own event, with who asked and why.
 */
export async function retryIrrevocable(
  deps: Pick<BrokerDeps, 'leases' | 'queue' | 'nowMs'>,
  leases: readonly Lease[],
  actor: string,
  reason?: string,
): Promise<RetrySummary> {
  const nowMs = deps.nowMs();
  const summary: RetrySummary = { retried: [], refused: [] };
  // Audited with the transition itself (markRetry), so a retry is never queued unrecorded.
  const event = (lease: Lease) => ({
    type: 'lease.retry_requested' as const,
    atMs: nowMs,
    ...leaseAuditFields(lease),
    actor,
    ...(reason ? { reason } : {}),
    // What the worker had last failed with, so the audit reads on its own.
    ...(lease.lastError ? { detail: { lastError: lease.lastError } } : {}),
  });
  for (let i = 0; i < leases.length; i += RETRY_CHUNK) {
    const chunk = leases.slice(i, i + RETRY_CHUNK);
    const results = await Promise.all(
      chunk.map((lease) => deps.leases.markRetry(lease.id, nowMs, event(lease))),
    );
    chunk.forEach((lease, index) => {
      const state = results[index] as string;
      if (state === 'retrying') summary.retried.push(lease);
      else summary.refused.push({ lease, state });
    });
  }
  await deps.queue.retryNow(summary.retried.map((lease) => lease.id));
  return summary;
}
