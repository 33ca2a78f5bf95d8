import { effectiveStatus, type Approval } from '../approvals/approval';
import type { Lease } from '../domain/types';
import type { StoredTask } from '../tasks/task-store';

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : undefined);

/** The public shape of a lease: identifiers and states, never a secret (only the credential's SHA-256). */
export const leaseView = (lease: Lease) => ({
  leaseId: lease.id,
  taskId: lease.taskId,
  grant: lease.grant,
  provider: lease.provider,
  identity: { issuer: lease.issuer, subject: lease.subject },
  state: lease.state,
  createdAt: iso(lease.createdAtMs),
  expiresAt: iso(lease.expiresAtMs),
  revokedAt: iso(lease.revokedAtMs),
  revocation: lease.revocation,
  revocationDetail: lease.revocationDetail,
  revokeReason: lease.revokeReason,
  attempts: lease.attempts,
  lastError: lease.lastError,
  credentialSha256: lease.credentialSha256,
});

export const taskView = (task: StoredTask, leases: readonly Lease[]) => ({
  taskId: task.id,
  identity: { issuer: task.issuer, subject: task.subject, kind: task.kind },
  purpose: task.purpose,
  ticket: task.ticket || undefined,
  ref: task.ref || undefined,
  grants: task.grants,
  // A CI job's task: the job's signed claims (repository, run, attempt...).
  job: task.job,
  state: task.state,
  outcome: task.outcome,
  summary: task.summary,
  createdAt: iso(task.createdAtMs),
  expiresAt: iso(task.expiresAtMs),
  completedAt: iso(task.completedAtMs),
  activeLeases: task.activeLeases,
  leases: leases.map(leaseView),
});

/**
 * The public shape of an approval, with the task it is about (purpose, ticket, ref, a CI job's claims) so
 * an approver decides knowing what the credential is for. Status as of `nowMs` (expiry needs no writer).
 */
export const approvalView = (approval: Approval, nowMs: number, task: StoredTask | null = null) => ({
  approvalId: approval.id,
  kind: approval.kind,
  status: effectiveStatus(approval, nowMs),
  summary: approval.summary,
  requester: approval.requester,
  reason: approval.reason,
  grant: approval.grant,
  ttlSeconds: approval.ttlSeconds,
  target: approval.target,
  task: approval.taskId
    ? {
        taskId: approval.taskId,
        purpose: task?.purpose,
        ticket: task?.ticket || undefined,
        ref: task?.ref || undefined,
        job: task?.job,
        state: task?.state,
      }
    : undefined,
  createdAt: iso(approval.createdAtMs),
  expiresAt: iso(approval.expiresAtMs),
  decision: approval.decision
    ? { by: approval.decision.by, at: iso(approval.decision.atMs), reason: approval.decision.reason }
    : undefined,
  usedAt: iso(approval.usedAtMs),
  leaseId: approval.leaseId,
});
