import { effectiveStatus, type Approval } from '../approvals/approval';

/** Who revoked a record, when and why. */
export interface Revocation {
  revokedAtMs: number;
  revokedBy: string;
  revokeReason: string;
}

/** Approving an app once: a workload (issuer + subject pattern) is known, owned and wanted. */
export interface Enrolment extends Partial<Revocation> {
  id: string;
  /** The issuer's name in the config. */
  issuer: string;
  /** `*` wildcards, matched against the whole subject (subject-pattern.ts). */
  subjectPattern: string;
  /** The team or person answerable for it, who recertifies it. */
  owner: string;
  purpose: string;
  expiresAtMs: number;
  approvalId: string;
  /** `issuer/subject` of the admin who proposed it. */
  createdBy: string;
  createdAtMs: number;
}

/** Approving one privilege: an enrolled workload may be issued one grant. */
export interface Entitlement extends Partial<Revocation> {
  id: string;
  enrolmentId: string;
  /** The enrolment's issuer and pattern, copied (they never change) so issuance matches in one read. */
  issuer: string;
  subjectPattern: string;
  grant: string;
  owner: string;
  purpose: string;
  expiresAtMs: number;
  approvalId: string;
  createdBy: string;
  createdAtMs: number;
  recertifiedAtMs?: number;
  recertifiedBy?: string;
  recertifyReason?: string;
}

/**
 * pending (awaiting its approval), active, denied, lapsed (nobody decided in time), expired, revoked; and
 * for an entitlement, suspended: itself in force, its enrolment not.
 */
export const RECORD_STATUSES = [
  'pending',
  'active',
  'suspended',
  'denied',
  'lapsed',
  'expired',
  'revoked',
] as const;
export type RecordStatus = (typeof RECORD_STATUSES)[number];

/**
 * A record's status as of `nowMs`, derived from the record and its approval on every read (nothing is
 * written when a record expires or its approval is decided, so nothing can drift). Revocation wins, then
 * the approval's answer, then the record's own expiry.
 */
export function recordStatus(
  record: Pick<Enrolment, 'expiresAtMs' | 'revokedAtMs'>,
  approval: Pick<Approval, 'kind' | 'status' | 'expiresAtMs'> | null,
  nowMs: number,
): RecordStatus {
  if (record.revokedAtMs) return 'revoked';
  // Fails closed: a record whose approval is gone was never approved as far as anyone can prove.
  const approvalStatus = approval ? effectiveStatus(approval, nowMs) : 'expired';
  if (approvalStatus === 'denied') return 'denied';
  if (approvalStatus === 'expired' || approvalStatus === 'used') return 'lapsed';
  if (record.expiresAtMs <= nowMs) return 'expired';
  return approvalStatus === 'approved' ? 'active' : 'pending';
}

/** An entitlement is active only while its enrolment is active too. */
export function entitlementStatus(own: RecordStatus, enrolment: RecordStatus): RecordStatus {
  return own === 'active' && enrolment !== 'active' ? 'suspended' : own;
}
