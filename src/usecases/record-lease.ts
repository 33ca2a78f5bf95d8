import { serializeAuditEvent, type AuditEvent } from '../audit/audit-log';
import { BrokerError } from '../domain/errors';
import type { Lease } from '../domain/types';
import type { CredentialProvider } from '../providers/provider';
import type { BrokerDeps } from './deps';

type Deps = Pick<BrokerDeps, 'config' | 'leases' | 'events'>;

/** Writes the lease and its audit entry; if that fails, the credential is revoked at once and never returned. */
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
      .revoke(lease, { nowMs, neverIssued: true })
      .catch((revokeError: Error) =>
        deps.events.revocationFailed(
          lease.id,
          lease.provider,
          `credential minted but ${why}; revoking it failed: ${revokeError.message}`,
          false,
        ),
      );
  let result: string;
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
    await revokeUnissued('never recorded nor returned');
    throw new BrokerError('unavailable', 'the lease could not be recorded; no credential was issued', {
      cause: error,
    });
  }
  if (result === 'ok') return;
  await revokeUnissued(`refused a lease (${result})`);
  if (result === 'cap')
    throw new BrokerError('lease_limit_reached', 'the broker has reached its cap on active leases');
  if (result === 'identity_cap' || result === 'task_cap') throw quotaError(deps, result);
  if (result === 'approval_used') throw new BrokerError('approval_used', 'the approval was already used');
  if (result.startsWith('approval_'))
    throw new BrokerError('approval_expired', 'the approval expired before the credential was recorded');
  throw new BrokerError('internal', 'lease id collision', { detail: `lease ${lease.id} existed` });
}

export function quotaError(deps: Pick<Deps, 'config'>, which: 'identity_cap' | 'task_cap'): BrokerError {
  const { maxActiveLeasesPerIdentity, maxActiveLeasesPerTask } = deps.config.broker;
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
