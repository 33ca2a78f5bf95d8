import { serializeAuditEvent, type AuditEvent } from '../audit/audit-log';
import { BrokerError } from '../domain/errors';
import type { Lease } from '../domain/types';
import type { CreateLeaseResult } from '../leases/lease-store';
import type { CredentialProvider } from '../providers/provider';
import { NotReplicatedError } from '../redis/durable-writes';
import type { BrokerDeps } from './deps';
import { leaseAuditFields } from './request-revocation';

type Deps = Pick<BrokerDeps, 'config' | 'leases' | 'events' | 'nowMs'>;

/**
 * The lease step, before minting: a lease quota (per identity, per task) already reached refuses the call
 * before a backend is asked for anything. The refusal that counts is createLease's, atomic with the write
 * (recordLease): this only spares minting a credential that would be revoked unissued.
 */
export async function checkLeaseQuota(
  deps: Pick<Deps, 'config' | 'leases' | 'events'>,
  owner: { taskId: string; issuer: string; subject: string },
): Promise<void> {
  const { maxActiveLeasesPerIdentity, maxActiveLeasesPerTask } = deps.config.broker;
  const reached = await deps.leases.quotaReached(owner, {
    perIdentity: maxActiveLeasesPerIdentity,
    perTask: maxActiveLeasesPerTask,
  });
  if (reached) throw quotaError(deps, reached);
}

/**
 * The lease step, after minting: writes the lease, its index entries, its due-index entry (its revocation
 * schedule: the worker's scheduler queues it when it is due) and its audit entry in one script. If that
 * fails, the credential is revoked at once and never returned.
 */
export async function recordLease(
  deps: Deps,
  provider: CredentialProvider,
  lease: Lease,
  write: { audit: AuditEvent; approvalId?: string; nowMs: number },
): Promise<void> {
  const { audit, nowMs } = write;
  // The credential exists at its source but never leaves the broker: revoke it now; a failure is reported.
  const revokeUnissued = (why: string) =>
    provider
      .revoke(lease, { nowMs })
      .catch((revokeError: Error) =>
        deps.events.revocationFailed(
          lease.id,
          lease.provider,
          `credential minted but ${why}; revoking it failed: ${revokeError.message}`,
          false,
        ),
      );
  let result: CreateLeaseResult;
  try {
    const options = {
      maxActiveLeases: deps.config.broker.maxActiveLeases,
      maxActiveLeasesPerIdentity: deps.config.broker.maxActiveLeasesPerIdentity,
      maxActiveLeasesPerTask: deps.config.broker.maxActiveLeasesPerTask,
      nowMs,
      auditEntry: serializeAuditEvent(audit),
      approvalId: write.approvalId,
    };
    result = await deps.leases.create(lease, options);
  } catch (error) {
    if (error instanceof NotReplicatedError) return notReplicated(deps, lease, error, revokeUnissued);
    await revokeUnissued('never recorded nor returned');
    throw new BrokerError('unavailable', 'the lease could not be recorded; no credential was issued', {
      cause: error,
    });
  }
  if (result === 'ok') return;
  await revokeUnissued(`refused a lease (${result})`);
  throw refusal(deps, lease, result);
}

/**
 * The lease stands on the primary but too few replicas confirmed it: a failover could still lose it, so the
 * credential never leaves. It is revoked now, and the lease is marked for revocation so the worker settles
 * it (a revocation is idempotent: revoking it again there is harmless).
 */
async function notReplicated(
  deps: Deps,
  lease: Lease,
  error: NotReplicatedError,
  revokeUnissued: (why: string) => Promise<unknown>,
): Promise<never> {
  await revokeUnissued(`its lease was not confirmed by the replicas (${error.message})`);
  if (error.result === 'ok') {
    const request = { reason: 'not confirmed by the Redis replicas; never returned', nowMs: deps.nowMs() };
    const event = {
      type: 'lease.revoke_requested' as const,
      atMs: request.nowMs,
      ...leaseAuditFields(lease),
      actor: 'broker',
      reason: request.reason,
    };
    await deps.leases.markRevoking(lease.id, request, event).catch(() => undefined);
  }
  throw new BrokerError(
    'not_replicated',
    'the lease was not confirmed by the Redis replicas; nothing was issued',
    {
      cause: error,
    },
  );
}

/** Every answer of createLease but `ok`, as the caller's error: the type checker sees each one handled. */
function refusal(deps: Deps, lease: Lease, result: Exclude<CreateLeaseResult, 'ok'>): BrokerError {
  switch (result) {
    case 'cap':
      deps.events.quotaRefused('leases');
      return new BrokerError('lease_limit_reached', 'the broker has reached its cap on active leases');
    case 'identity_cap':
    case 'task_cap':
      return quotaError(deps, result);
    // Completed or expired while the credential was being minted: the lease was never written.
    case 'task_not_open':
      return new BrokerError(
        'task_not_open',
        'the task was completed or expired while the credential was minted',
      );
    case 'approval_used':
      return new BrokerError('approval_used', 'the approval was already used');
    case 'approval_expired':
    case 'approval_pending':
    case 'approval_denied':
    case 'approval_missing':
      return new BrokerError('approval_expired', 'the approval expired before the credential was recorded');
    case 'exists':
      return new BrokerError('internal', 'lease id collision', { detail: `lease ${lease.id} existed` });
    default:
      return new BrokerError('internal', 'unexpected answer recording a lease', {
        detail: `createLease answered ${String(result satisfies never)}`,
      });
  }
}

/** A lease quota's refusal, counted (`tasklease_quota_refusals_total`). */
export function quotaError(
  deps: Pick<Deps, 'config' | 'events'>,
  which: 'identity_cap' | 'task_cap',
): BrokerError {
  const { maxActiveLeasesPerIdentity, maxActiveLeasesPerTask } = deps.config.broker;
  deps.events.quotaRefused(which === 'identity_cap' ? 'leases_per_identity' : 'leases_per_task');
  return which === 'identity_cap'
    ? new BrokerError(
        'lease_limit_reached',
        `this identity holds its quota of ${maxActiveLeasesPerIdentity} active leases`,
      )
    : new BrokerError(
        'lease_limit_reached',
        `this task holds its quota of ${maxActiveLeasesPerTask} active leases`,
      );
}
