/**
 * A request for a human decision. `step-up`: one credential (task + grant + TTL), used once. `enrolment` and
 * `entitlement`: a standing record (src/entitlements) that is active only while its approval is `approved`.
 */
export const APPROVAL_KINDS = ['step-up', 'enrolment', 'entitlement'] as const;
export type ApprovalKind = (typeof APPROVAL_KINDS)[number];

/**
 * pending → approved → used (step-up only), or pending → denied, or pending|approved → expired.
 * `denied`, `expired` and `used` are final.
 */
export const APPROVAL_STATUSES = ['pending', 'approved', 'denied', 'expired', 'used'] as const;
export type ApprovalStatus = (typeof APPROVAL_STATUSES)[number];

export interface ApprovalDecision {
  /** `issuer/subject` of the approver. */
  by: string;
  atMs: number;
  reason: string;
}

export interface Approval {
  id: string;
  kind: ApprovalKind;
  status: ApprovalStatus;
  createdAtMs: number;
  /** Pending: when the request lapses. Approved step-up: when the approval must have been used by. */
  expiresAtMs: number;
  /** Who asked: the workload (step-up) or the admin who proposed a record. */
  requester: { issuer: string; subject: string };
  /** Why the requester asked (the credential call's `reason`, a proposal's purpose). */
  reason?: string;
  /** Step-up: the task, grant and TTL the approval is bound to. */
  taskId?: string;
  grant?: string;
  ttlSeconds?: number;
  /** Enrolment or entitlement: the id of the record it approves. */
  target?: string;
  /** One line an approver reads in the inbox. */
  summary: string;
  decision?: ApprovalDecision;
  /** Step-up: when it was used, and for which lease. */
  usedAtMs?: number;
  leaseId?: string;
}

/**
 * The status as of `nowMs`, whether the sweeper has written it yet or not: a pending request past its expiry
 * is expired, and so is an approved step-up not used in time. An approved record stays approved (the record
 * carries its own expiry).
 */
export function effectiveStatus(
  approval: Pick<Approval, 'kind' | 'status' | 'expiresAtMs'>,
  nowMs: number,
): ApprovalStatus {
  const lapses =
    approval.status === 'pending' || (approval.status === 'approved' && approval.kind === 'step-up');
  return lapses && approval.expiresAtMs <= nowMs ? 'expired' : approval.status;
}
