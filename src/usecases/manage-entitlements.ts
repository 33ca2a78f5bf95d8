import { serializeAuditEvent } from '../audit/audit-log';
import { BrokerError } from '../domain/errors';
import { identityKey, type Identity } from '../domain/types';
import type { Entitlement } from '../entitlements/records';
import type { BrokerDeps } from './deps';
import { expiryOf, type Validity } from './propose-entitlement';
import { describeEntitlements } from './read-entitlements';

type Deps = Pick<BrokerDeps, 'config' | 'approvals' | 'entitlements' | 'nowMs'>;

/**
 * Revokes an enrolment or an entitlement, at once and for good (a revoked record is never active again;
 * a new proposal is a new decision). Revoking an enrolment suspends every entitlement under it.
 */
export async function revokeRecord(
  deps: Deps,
  admin: Identity,
  kind: 'enrolment' | 'entitlement',
  id: string,
  reason: string,
): Promise<void> {
  const nowMs = deps.nowMs();
  const record =
    kind === 'enrolment'
      ? await deps.entitlements.getEnrolment(id)
      : await deps.entitlements.getEntitlement(id);
  if (!record) throw new BrokerError('not_found', `no such ${kind}`);
  const by = identityKey(admin.issuer, admin.subject);
  const audit = serializeAuditEvent({
    type: kind === 'enrolment' ? 'enrolment.revoked' : 'entitlement.revoked',
    atMs: nowMs,
    actor: by,
    grant: 'grant' in record ? (record.grant as string) : undefined,
    tokenSha256: admin.tokenSha256,
    reason,
    detail: {
      [`${kind}Id`]: id,
      issuer: record.issuer,
      subjectPattern: record.subjectPattern,
      owner: record.owner,
    },
  });
  const result = await deps.entitlements.revoke(kind, id, by, nowMs, reason, audit);
  if (result === 'missing') throw new BrokerError('not_found', `no such ${kind}`);
  if (result === 'revoked') throw new BrokerError('record_not_active', `the ${kind} is already revoked`);
}

export interface Recertification {
  validity: Validity;
  reason: string;
}

/**
 * Recertifies an active entitlement: an approver confirms it is still needed and sets its new expiry
 * (capped by `maxValidityDays` from now). Separation of duties as for its approval: never the admin who
 * proposed it. An entitlement no longer active cannot be revived this way: propose a new one.
 */
export async function recertifyEntitlement(
  deps: Deps,
  approver: Identity,
  id: string,
  input: Recertification,
): Promise<Entitlement> {
  const nowMs = deps.nowMs();
  const found = await deps.entitlements.getEntitlement(id);
  if (!found) throw new BrokerError('not_found', 'no such entitlement');
  const by = identityKey(approver.issuer, approver.subject);
  if (found.createdBy === by)
    throw new BrokerError('separation_of_duties', 'an entitlement is never recertified by its proposer');
  const [described] = await describeEntitlements(deps, [found], nowMs);
  if (described?.status !== 'active')
    throw new BrokerError('record_not_active', `the entitlement is ${described?.status ?? 'gone'}`);
  const expiresAtMs = expiryOf(deps.config, input.validity, nowMs);
  const audit = serializeAuditEvent({
    type: 'entitlement.recertified',
    atMs: nowMs,
    actor: by,
    grant: found.grant,
    tokenSha256: approver.tokenSha256,
    reason: input.reason,
    detail: {
      entitlementId: id,
      owner: found.owner,
      previousExpiresAt: new Date(found.expiresAtMs).toISOString(),
      expiresAt: new Date(expiresAtMs).toISOString(),
    },
  });
  const change = { nowMs, expiresAtMs, by, reason: input.reason };
  const result = await deps.entitlements.recertify(found, change, audit);
  if (result === 'missing') throw new BrokerError('not_found', 'no such entitlement');
  if (result !== 'ok') throw new BrokerError('record_not_active', `the entitlement is ${result}`);
  return { ...found, expiresAtMs, recertifiedAtMs: nowMs, recertifiedBy: by, recertifyReason: input.reason };
}
