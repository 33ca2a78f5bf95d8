import type { Approval } from '../approvals/approval';
import { serializeAuditEvent, type AuditEvent } from '../audit/audit-log';
import { BrokerError } from '../domain/errors';
import { identityKey, type Identity } from '../domain/types';
import type { BrokerDeps } from './deps';

type Deps = Pick<BrokerDeps, 'config' | 'approvals' | 'audit' | 'tasks' | 'leases' | 'events' | 'nowMs'>;

export interface ApprovalDecisionInput {
  status: 'approved' | 'denied';
  reason: string;
}

/** The approval event: about the requester's request (its subject), decided by the approver (its actor). */
function decisionEvent(
  approval: Approval,
  type: AuditEvent['type'],
  actor: string,
  atMs: number,
  reason: string,
) {
  return {
    type,
    atMs,
    issuer: approval.requester.issuer,
    subject: approval.requester.subject,
    task: approval.taskId,
    grant: approval.grant,
    actor,
    reason,
    detail: {
      approvalId: approval.id,
      kind: approval.kind,
      ...(approval.ttlSeconds ? { ttlSeconds: approval.ttlSeconds } : {}),
      ...(approval.target ? { target: approval.target } : {}),
    },
  } satisfies AuditEvent;
}

/**
 * Approve or deny, once. Separation of duties first: the approver is never the requester, and never an
 * identity that was issued a grant this one must be kept apart from (the stage that produced what this
 * grant releases). A refusal on those grounds is audited (`approval.refused`): someone tried.
 */
export async function decideApproval(
  deps: Deps,
  approver: Identity,
  approvalId: string,
  input: ApprovalDecisionInput,
): Promise<Approval> {
  const nowMs = deps.nowMs();
  const approval = await deps.approvals.get(approvalId);
  if (!approval) throw new BrokerError('not_found', 'no such approval');
  const actor = identityKey(approver.issuer, approver.subject);
  const conflict = await separationConflict(deps, approval, approver, nowMs);
  if (conflict) {
    await deps.audit.append(decisionEvent(approval, 'approval.refused', actor, nowMs, conflict));
    throw new BrokerError('separation_of_duties', conflict);
  }
  const useByMs = await useBy(deps, approval, input.status, nowMs);
  const type = input.status === 'approved' ? 'approval.approved' : 'approval.denied';
  const event = serializeAuditEvent(decisionEvent(approval, type, actor, nowMs, input.reason));
  const decision = { status: input.status, by: actor, atMs: nowMs, reason: input.reason };
  const result = await deps.approvals.decide(approval.id, decision, event, useByMs);
  switch (result) {
    case 'ok':
      deps.events.approvalSettled(approval, input.status);
      return { ...approval, status: input.status, decision, expiresAtMs: useByMs ?? approval.expiresAtMs };
    case 'missing':
      throw new BrokerError('not_found', 'no such approval');
    case 'self':
      throw new BrokerError('separation_of_duties', 'an approval is never decided by its requester');
    default:
      throw new BrokerError('approval_not_pending', `the approval is ${result}; a decision is final`);
  }
}

/**
 * A step-up approval must be used within `useWithinSeconds`, and never after its task ends. Approving for
 * a task that has already ended is refused: the approval could never be used.
 */
async function useBy(deps: Deps, approval: Approval, status: string, nowMs: number) {
  if (approval.kind !== 'step-up' || status !== 'approved') return undefined;
  const task = approval.taskId ? await deps.tasks.get(approval.taskId, nowMs) : null;
  if (!task || task.state !== 'open')
    throw new BrokerError(
      'task_not_open',
      `the task is ${task?.state ?? 'gone'}; nothing could use this approval`,
    );
  return Math.min(nowMs + deps.config.approvals.useWithinSeconds * 1000, task.expiresAtMs);
}

/** Why this approver may not decide this approval, or null. */
async function separationConflict(
  deps: Deps,
  approval: Approval,
  approver: Identity,
  nowMs: number,
): Promise<string | null> {
  const { requester } = approval;
  if (requester.issuer === approver.issuer && requester.subject === approver.subject)
    return 'an approval is never decided by its requester';
  if (approval.kind !== 'step-up' || !approval.grant || !approval.taskId) return null;
  const grant = Object.hasOwn(deps.config.grants, approval.grant) ? deps.config.grants[approval.grant] : null;
  const apart = new Set(grant?.approverMustNotHold ?? []);
  if (apart.size === 0) return null;
  const task = await deps.tasks.get(approval.taskId, nowMs);
  const held = await deps.leases.getMany(
    await deps.leases.selectIds({ identity: identityKey(approver.issuer, approver.subject) }),
  );
  for (const lease of held.filter((candidate) => apart.has(candidate.grant))) {
    if (lease.taskId === approval.taskId) return producedBy(lease.grant, approval.grant);
    const leaseTask = task?.ticket ? await deps.tasks.get(lease.taskId, nowMs) : null;
    if (leaseTask && leaseTask.ticket === task?.ticket) return producedBy(lease.grant, approval.grant);
  }
  return null;
}

const producedBy = (held: string, grant: string) =>
  `the approver was issued ${held} for this work, which ${grant} must be kept apart from`;
