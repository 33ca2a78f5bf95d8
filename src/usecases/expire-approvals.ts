import { serializeAuditEvent } from '../audit/audit-log';
import type { SharedDeps } from './deps';

const BATCH = 500;

type Deps = Pick<SharedDeps, 'config' | 'approvals' | 'entitlements' | 'events'>;

/**
 * Writes down every approval whose deadline has passed: a request nobody decided in time, or a step-up
 * approval that was not used in time. Each expiry is final and audited (`approval.expired`). Reads already
 * treat them as expired (effectiveStatus); this makes the record and the audit log say so.
 */
export async function expireApprovals(deps: Deps, nowMs: number): Promise<number> {
  const approvals = await deps.approvals.getMany(await deps.approvals.dueIds(nowMs, BATCH));
  let expired = 0;
  for (const approval of approvals) {
    const unused = approval.status === 'approved';
    const event = serializeAuditEvent({
      type: 'approval.expired',
      atMs: nowMs,
      issuer: approval.requester.issuer,
      subject: approval.requester.subject,
      task: approval.taskId,
      grant: approval.grant,
      actor: 'worker',
      reason: unused ? 'approved but not used in time' : 'not decided in time',
      detail: { approvalId: approval.id, kind: approval.kind },
    });
    if ((await deps.approvals.expire(approval.id, nowMs, event)) !== 'expired') continue;
    expired += 1;
    deps.events.approvalSettled(approval, 'expired');
  }
  // The index keeps an approval for as long as it can matter, plus the retention period: a step-up's
  // deadline and use-by time, or an enrolment's or entitlement's (longer) review window.
  const { pendingTtlSeconds, useWithinSeconds } = deps.config.approvals;
  const reviewMs = deps.config.entitlements.reviewWithinDays * 86_400_000;
  await deps.approvals.purgeIndex(nowMs, Math.max((pendingTtlSeconds + useWithinSeconds) * 1000, reviewMs));
  await deps.entitlements.purgeIndexes(nowMs, Object.keys(deps.config.grants));
  return expired;
}
