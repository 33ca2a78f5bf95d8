import type { Approval } from '../approvals/approval';
import { serializeAuditEvent } from '../audit/audit-log';
import type { Config } from '../config/schema';
import { BrokerError } from '../domain/errors';
import { identityKey, type Identity } from '../domain/types';
import type { Enrolment, Entitlement } from '../entitlements/records';
import type { BrokerDeps } from './deps';
import { describeEnrolments } from './read-entitlements';

type Deps = Pick<BrokerDeps, 'config' | 'approvals' | 'entitlements' | 'events' | 'nowMs' | 'newId'>;

const DAY_MS = 86_400_000;

/** How long a record is valid for: an explicit end, or a number of days from now. */
export type Validity = { expiresAtMs: number } | { validDays: number };

/** The expiry a validity asks for, refused past `entitlements.maxValidityDays` or not in the future. */
export function expiryOf(config: Pick<Config, 'entitlements'>, validity: Validity, nowMs: number): number {
  const expiresAtMs = 'expiresAtMs' in validity ? validity.expiresAtMs : nowMs + validity.validDays * DAY_MS;
  const { maxValidityDays } = config.entitlements;
  if (!Number.isFinite(expiresAtMs) || expiresAtMs <= nowMs)
    throw new BrokerError('invalid_request', 'the expiry must be in the future');
  if (expiresAtMs > nowMs + maxValidityDays * DAY_MS)
    throw new BrokerError('invalid_request', `valid for at most ${maxValidityDays} days (maxValidityDays)`);
  return expiresAtMs;
}

export interface EnrolmentProposal {
  issuer: string;
  subjectPattern: string;
  owner: string;
  purpose: string;
  validity: Validity;
}

export interface EntitlementProposal {
  enrolmentId: string;
  grant: string;
  owner: string;
  purpose: string;
  validity: Validity;
}

/** The approval a proposal waits on: decided by another approver within `reviewWithinDays`. */
function recordApproval(deps: Deps, proposer: Identity, record: Enrolment | Entitlement, summary: string) {
  const nowMs = record.createdAtMs;
  const approval: Approval = {
    id: deps.newId(),
    kind: 'grant' in record ? 'entitlement' : 'enrolment',
    status: 'pending',
    createdAtMs: nowMs,
    expiresAtMs: nowMs + deps.config.entitlements.reviewWithinDays * DAY_MS,
    requester: { issuer: proposer.issuer, subject: proposer.subject },
    reason: record.purpose,
    grant: 'grant' in record ? record.grant : undefined,
    target: record.id,
    summary,
  };
  const audit = serializeAuditEvent({
    type: 'approval.requested',
    atMs: nowMs,
    issuer: proposer.issuer,
    subject: proposer.subject,
    actor: identityKey(proposer.issuer, proposer.subject),
    grant: approval.grant,
    tokenSha256: proposer.tokenSha256,
    reason: record.purpose,
    detail: {
      approvalId: approval.id,
      kind: approval.kind,
      target: record.id,
      issuer: record.issuer,
      subjectPattern: record.subjectPattern,
      owner: record.owner,
      expiresAt: new Date(record.expiresAtMs).toISOString(),
      ...('enrolmentId' in record ? { enrolmentId: record.enrolmentId } : {}),
    },
  });
  return { approval, audit };
}

/** Proposes enrolling a workload: the record and its pending approval, written and audited together. */
export async function proposeEnrolment(deps: Deps, proposer: Identity, proposal: EnrolmentProposal) {
  const nowMs = deps.nowMs();
  if (!deps.config.issuers.some((issuer) => issuer.name === proposal.issuer))
    throw new BrokerError('invalid_request', `no issuer named ${proposal.issuer}`);
  const enrolment: Enrolment = {
    id: deps.newId(),
    issuer: proposal.issuer,
    subjectPattern: proposal.subjectPattern,
    owner: proposal.owner,
    purpose: proposal.purpose,
    expiresAtMs: expiryOf(deps.config, proposal.validity, nowMs),
    approvalId: '',
    createdBy: identityKey(proposer.issuer, proposer.subject),
    createdAtMs: nowMs,
  };
  const summary = `${proposer.subject} proposes enrolling ${enrolment.issuer} ${enrolment.subjectPattern} (owner ${enrolment.owner})`;
  const { approval, audit } = recordApproval(deps, proposer, enrolment, summary);
  enrolment.approvalId = approval.id;
  await deps.entitlements.proposeEnrolment(enrolment, approval, audit);
  deps.events.approvalRequested(approval);
  return { enrolment, approval };
}

/**
 * Proposes entitling an enrolment to a grant. The enrolment may still be pending (the two are approved
 * separately, in any order), but not revoked, denied, lapsed or expired.
 */
export async function proposeEntitlement(deps: Deps, proposer: Identity, proposal: EntitlementProposal) {
  const nowMs = deps.nowMs();
  if (!Object.hasOwn(deps.config.grants, proposal.grant))
    throw new BrokerError('unknown_grant', `unknown grant: ${proposal.grant}`);
  const found = await deps.entitlements.getEnrolment(proposal.enrolmentId);
  if (!found) throw new BrokerError('not_found', 'no such enrolment');
  const status = (await describeEnrolments(deps, [found], nowMs))[0]?.status;
  if (status !== 'active' && status !== 'pending')
    throw new BrokerError('record_not_active', `the enrolment is ${status}`);
  const entitlement: Entitlement = {
    id: deps.newId(),
    enrolmentId: found.id,
    issuer: found.issuer,
    subjectPattern: found.subjectPattern,
    grant: proposal.grant,
    owner: proposal.owner,
    purpose: proposal.purpose,
    expiresAtMs: expiryOf(deps.config, proposal.validity, nowMs),
    approvalId: '',
    createdBy: identityKey(proposer.issuer, proposer.subject),
    createdAtMs: nowMs,
  };
  const summary = `${proposer.subject} proposes entitling ${found.issuer} ${found.subjectPattern} to ${proposal.grant} (owner ${proposal.owner})`;
  const { approval, audit } = recordApproval(deps, proposer, entitlement, summary);
  entitlement.approvalId = approval.id;
  await deps.entitlements.proposeEntitlement(entitlement, approval, audit);
  deps.events.approvalRequested(approval);
  return { entitlement, approval };
}
