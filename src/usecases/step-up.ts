import { effectiveStatus, type Approval } from '../approvals/approval';
import { serializeAuditEvent } from '../audit/audit-log';
import { BrokerError } from '../domain/errors';
import type { BrokerDeps } from './deps';
import type { IssueRequest } from './issue-request';

type Deps = Pick<BrokerDeps, 'config' | 'approvals' | 'events' | 'newId'>;

/** What a credential call answers (202) while a human has yet to approve it. */
export interface PendingStepUp {
  approvalId: string;
  status: 'pending' | 'approved';
  expiresAt: string;
  grant: string;
  ttlSeconds: number;
}

const pendingView = (approval: Approval, status: 'pending' | 'approved'): PendingStepUp => ({
  approvalId: approval.id,
  status,
  expiresAt: new Date(approval.expiresAtMs).toISOString(),
  grant: approval.grant ?? '',
  ttlSeconds: approval.ttlSeconds ?? 0,
});

/** What a step-up request is for: this credential call's identity, task, grant (by name), TTL and reason. */
type StepUpAsk = Pick<IssueRequest, 'identity' | 'task' | 'input' | 'ttlSeconds' | 'nowMs'>;

/**
 * Opens a step-up request for this task, grant and TTL — or answers the one already open, so an agent that
 * asks again (or retries after a timeout) does not flood the approvers' inbox.
 */
export async function requestStepUp(
  deps: Deps,
  ask: StepUpAsk,
  /** Why the policy would permit it once approved (its policy ids), for the approver and the audit. */
  policyReason: string,
): Promise<PendingStepUp> {
  const { task, identity, nowMs, ttlSeconds } = ask;
  const { grant, reason } = ask.input;
  const { pendingTtlSeconds, useWithinSeconds } = deps.config.approvals;
  // Never beyond the task: an approval for a task that has ended could never be used.
  const expiresAtMs = Math.min(nowMs + pendingTtlSeconds * 1000, task.expiresAtMs);
  const approval: Approval = {
    id: deps.newId(),
    kind: 'step-up',
    status: 'pending',
    createdAtMs: nowMs,
    expiresAtMs,
    requester: { issuer: identity.issuer, subject: identity.subject },
    reason,
    taskId: task.id,
    grant,
    ttlSeconds,
    summary: `${identity.subject} asks for ${grant} for ${ttlSeconds}s in task "${task.purpose}"`,
  };
  const audit = serializeAuditEvent({
    type: 'approval.requested',
    atMs: nowMs,
    issuer: identity.issuer,
    subject: identity.subject,
    task: task.id,
    ticket: task.ticket,
    ref: task.ref,
    grant,
    tokenSha256: identity.tokenSha256,
    reason,
    detail: {
      approvalId: approval.id,
      kind: 'step-up',
      ttlSeconds,
      policy: policyReason,
    },
  });
  // An open request of this task that covers this one (same grant, at least this TTL) is the answer instead.
  const openId = await deps.approvals.create(approval, audit, expiresAtMs + useWithinSeconds * 1000);
  if (openId) return openView(deps, openId, nowMs);
  deps.events.approvalRequested(approval);
  return pendingView(approval, 'pending');
}

async function openView(deps: Pick<Deps, 'approvals'>, id: string, nowMs: number) {
  const open = await deps.approvals.get(id);
  if (!open) throw new BrokerError('unavailable', 'the open approval request vanished; ask again');
  return pendingView(open, effectiveStatus(open, nowMs) === 'approved' ? 'approved' : 'pending');
}

/**
 * The approval an agent presents with its credential call, checked against what it is bound to: this task,
 * this grant, and no longer a TTL than was approved. An id of no approval, or of another task's, answers
 * the same `approval_mismatch`, so approval ids cannot be probed. A pending one answers `pending`.
 * Used up only when the lease is written (createLease), so this check is not the last word on `used`.
 */
export async function checkPresentedApproval(
  deps: Pick<Deps, 'approvals'>,
  approvalId: string,
  bound: Pick<IssueRequest, 'task' | 'input' | 'ttlSeconds' | 'nowMs'>,
): Promise<{ approval: Approval; pending: PendingStepUp | null }> {
  const approval = await deps.approvals.get(approvalId);
  const matches =
    approval !== null &&
    approval.kind === 'step-up' &&
    approval.taskId === bound.task.id &&
    approval.grant === bound.input.grant &&
    bound.ttlSeconds <= (approval.ttlSeconds ?? 0);
  if (!matches) {
    throw new BrokerError(
      'approval_mismatch',
      'the approval is not one for this task and grant, or was given for a shorter TTL',
    );
  }
  const status = effectiveStatus(approval, bound.nowMs);
  switch (status) {
    case 'approved':
      return { approval, pending: null };
    case 'pending':
      return { approval, pending: pendingView(approval, 'pending') };
    case 'denied':
      throw new BrokerError('approval_denied', `the request was denied: ${approval.decision?.reason ?? ''}`);
    case 'expired':
      throw new BrokerError('approval_expired', 'the approval has expired');
    case 'used':
      throw new BrokerError('approval_used', 'the approval was already used');
  }
}
