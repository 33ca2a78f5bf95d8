import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import type { AuditEvent, RawAuditEntry } from '../audit/audit-log';
import { ASYMMETRIC_ALGORITHMS } from '../config/schema';
import { TASK_RECORD_TYPE } from '../tasks/task-record';

/** The signed task record's payload (src/tasks/task-record.ts). */
export interface TaskRecord extends JWTPayload {
  task: {
    id: string;
    issuer: string;
    subject: string;
    purpose: string;
    ticket?: string;
    ref?: string;
    state: string;
    outcome: string | null;
    job?: Record<string, string>;
  };
  grantsIssued: string[];
  leases: { id: string; grant: string; provider: string; credentialSha256: string }[];
}

/** A task record checked against keys the caller trusts: signature, type, algorithm. */
export async function verifyTaskRecord(jws: string, jwks: JSONWebKeySet): Promise<TaskRecord> {
  const { payload } = await jwtVerify(jws.trim(), createLocalJWKSet(jwks), {
    typ: TASK_RECORD_TYPE,
    algorithms: [...ASYMMETRIC_ALGORITHMS],
  });
  return payload as TaskRecord;
}

export interface LeaseStory {
  lease: string;
  grant?: string;
  provider?: string;
  issuedAt?: string;
  expiresAt?: string;
  credentialSha256?: string;
  /** Where it ended: revoked, expired, force-closed, irrevocable, or still live as far as the log says. */
  state: string;
  revocation?: string;
  /** The approver of the step-up approval it was issued with (`issuer/subject`). */
  approvedBy?: string;
}

/** A step-up request of the task, as its audit events tell it. */
export interface ApprovalStory {
  approvalId: string;
  grant?: string;
  requestedAt: string;
  /** requested (nothing after it in the log), approved, denied, expired, or used (a lease was issued with it). */
  status: string;
  decidedBy?: string;
  reason?: string;
  lease?: string;
}

export interface TaskReconstruction {
  task: {
    id: string;
    identity?: string;
    purpose?: string;
    ticket?: string;
    ref?: string;
    job: Record<string, string>;
    declaredAt?: string;
    completedAt?: string;
    outcome?: string;
  };
  leases: LeaseStory[];
  approvals: ApprovalStory[];
  denials: { at: string; grant?: string; reason?: string }[];
  timeline: {
    at: string;
    id: string;
    type: string;
    grant?: string;
    lease?: string;
    actor?: string;
    reason?: string;
  }[];
}

const iso = (atMs: number) => new Date(atMs).toISOString();

function leaseEnding(story: LeaseStory, event: AuditEvent) {
  const detail = event.detail ?? {};
  if (event.type === 'lease.settled' || event.type === 'lease.force_closed') {
    story.state = String(detail.state ?? story.state);
    story.revocation = detail.revocation === undefined ? undefined : String(detail.revocation);
  } else if (event.type === 'lease.irrevocable') story.state = 'irrevocable';
  else if (event.type === 'lease.revoke_requested' && story.state === 'active') story.state = 'revoking';
}

/** Follows a step-up request through its events (refusals leave it as it was: nothing changed). */
function approvalStep(approvals: Map<string, ApprovalStory>, event: AuditEvent) {
  const approvalId = String(event.detail?.approvalId ?? '');
  if (event.type === 'approval.requested') {
    approvals.set(approvalId, {
      approvalId,
      grant: event.grant,
      requestedAt: iso(event.atMs),
      status: 'requested',
    });
    return;
  }
  const story = approvals.get(approvalId);
  if (!story) return;
  if (event.type === 'approval.approved' || event.type === 'approval.denied') {
    story.status = event.type === 'approval.approved' ? 'approved' : 'denied';
    story.decidedBy = event.actor;
    story.reason = event.reason;
  } else if (event.type === 'approval.expired') story.status = 'expired';
  else if (event.type === 'credential.issued') {
    story.status = 'used';
    story.lease = event.lease;
  }
}

/** What the audit events of one task say happened in it, oldest first. */
export function reconstructTask(taskId: string, entries: readonly RawAuditEntry[]): TaskReconstruction {
  const out: TaskReconstruction = {
    task: { id: taskId, job: {} },
    leases: [],
    approvals: [],
    denials: [],
    timeline: [],
  };
  const leases = new Map<string, LeaseStory>();
  const approvals = new Map<string, ApprovalStory>();
  for (const entry of entries) {
    const event = JSON.parse(entry.json) as AuditEvent;
    const detail = event.detail ?? {};
    out.timeline.push({
      at: iso(event.atMs),
      id: entry.id,
      type: event.type,
      grant: event.grant,
      lease: event.lease,
      actor: event.actor,
      reason: event.reason,
    });
    if (event.type.startsWith('approval.') || detail.approvalId) approvalStep(approvals, event);
    if (event.type === 'task.declared') {
      out.task = {
        ...out.task,
        identity: `${event.issuer}/${event.subject}`,
        purpose: String(detail.purpose ?? ''),
        ticket: event.ticket,
        ref: event.ref,
        declaredAt: iso(event.atMs),
        job: Object.fromEntries(
          Object.entries(detail)
            .filter(([key]) => key.startsWith('job.'))
            .map(([key, value]) => [key.slice(4), String(value)]),
        ),
      };
    } else if (event.type === 'task.completed') {
      out.task.completedAt = iso(event.atMs);
      out.task.outcome = event.reason;
    } else if (event.type === 'credential.denied') {
      out.denials.push({ at: iso(event.atMs), grant: event.grant, reason: event.reason });
    } else if (event.type === 'credential.issued' && event.lease) {
      leases.set(event.lease, {
        lease: event.lease,
        grant: event.grant,
        provider: detail.provider === undefined ? undefined : String(detail.provider),
        issuedAt: iso(event.atMs),
        expiresAt: detail.ttlSeconds ? iso(event.atMs + Number(detail.ttlSeconds) * 1000) : undefined,
        credentialSha256: event.credentialSha256,
        state: 'active',
        approvedBy: detail.approvedBy === undefined ? undefined : String(detail.approvedBy),
      });
    } else if (event.lease && leases.has(event.lease)) {
      leaseEnding(leases.get(event.lease) as LeaseStory, event);
    }
  }
  out.leases = [...leases.values()];
  out.approvals = [...approvals.values()];
  return out;
}

/** Where a signed record and the audit log disagree about the task (empty: they agree). */
export function compareRecord(record: TaskRecord, story: TaskReconstruction): string[] {
  const differences: string[] = [];
  const task = record.task;
  if (task.id !== story.task.id) differences.push(`the record is of task ${task.id}, not ${story.task.id}`);
  const expect = (what: string, recorded: unknown, logged: unknown) => {
    if ((recorded ?? '') !== (logged ?? ''))
      differences.push(
        `${what}: record says ${JSON.stringify(recorded)}, audit says ${JSON.stringify(logged)}`,
      );
  };
  expect('identity', `${task.issuer}/${task.subject}`, story.task.identity);
  expect('purpose', task.purpose, story.task.purpose);
  expect('ticket', task.ticket, story.task.ticket);
  expect('ref', task.ref, story.task.ref);
  if (task.outcome) expect('outcome', task.outcome, story.task.outcome);
  const logged = new Map(story.leases.map((lease) => [lease.lease, lease]));
  for (const lease of record.leases) {
    const match = logged.get(lease.id);
    if (!match) differences.push(`lease ${lease.id} is in the record but was never audited as issued`);
    else expect(`lease ${lease.id} credential hash`, lease.credentialSha256, match.credentialSha256);
  }
  // Only a completion record lists every lease; one signed at declaration cannot list what came after it.
  if (!task.outcome) return differences;
  const recorded = new Set(record.leases.map((lease) => lease.id));
  for (const lease of story.leases)
    if (!recorded.has(lease.lease))
      differences.push(`lease ${lease.lease} was audited as issued but is not in the record`);
  return differences;
}
