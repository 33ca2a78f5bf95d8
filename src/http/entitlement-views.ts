import { effectiveStatus, type Approval } from '../approvals/approval';
import type { DescribedEnrolment, DescribedEntitlement } from '../usecases/read-entitlements';

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : undefined);

const approvalSummary = (approval: Approval | null, nowMs: number) =>
  approval
    ? {
        approvalId: approval.id,
        status: effectiveStatus(approval, nowMs),
        expiresAt: iso(approval.expiresAtMs),
        decision: approval.decision
          ? { by: approval.decision.by, at: iso(approval.decision.atMs), reason: approval.decision.reason }
          : undefined,
      }
    : null;

const revocation = (record: { revokedAtMs?: number; revokedBy?: string; revokeReason?: string }) => ({
  revokedAt: iso(record.revokedAtMs),
  revokedBy: record.revokedBy,
  revokeReason: record.revokeReason,
});

/** The public shape of an enrolment, its status derived from its approval as of `nowMs`. */
export const enrolmentView = ({ enrolment, approval, status }: DescribedEnrolment, nowMs: number) => ({
  enrolmentId: enrolment.id,
  status,
  issuer: enrolment.issuer,
  subjectPattern: enrolment.subjectPattern,
  owner: enrolment.owner,
  purpose: enrolment.purpose,
  expiresAt: iso(enrolment.expiresAtMs),
  approval: approvalSummary(approval, nowMs),
  createdBy: enrolment.createdBy,
  createdAt: iso(enrolment.createdAtMs),
  ...revocation(enrolment),
});

/** The public shape of an entitlement: active only while its approval, its expiry and its enrolment allow. */
export const entitlementView = (described: DescribedEntitlement, nowMs: number) => {
  const { entitlement, approval, status, enrolment } = described;
  return {
    entitlementId: entitlement.id,
    status,
    grant: entitlement.grant,
    owner: entitlement.owner,
    purpose: entitlement.purpose,
    enrolment: {
      enrolmentId: entitlement.enrolmentId,
      issuer: entitlement.issuer,
      subjectPattern: entitlement.subjectPattern,
      owner: enrolment?.enrolment.owner,
      status: enrolment?.status ?? 'expired',
    },
    expiresAt: iso(entitlement.expiresAtMs),
    expiresInSeconds: Math.max(0, Math.floor((entitlement.expiresAtMs - nowMs) / 1000)),
    approval: approvalSummary(approval, nowMs),
    createdBy: entitlement.createdBy,
    createdAt: iso(entitlement.createdAtMs),
    recertifiedAt: iso(entitlement.recertifiedAtMs),
    recertifiedBy: entitlement.recertifiedBy,
    recertifyReason: entitlement.recertifyReason,
    ...revocation(entitlement),
  };
};
