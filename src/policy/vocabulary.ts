import type { Context, EntityJson } from '@cedar-policy/cedar-wasm/nodejs';
import type { Identity, Task } from '../domain/types';

/**
 * The policy vocabulary, stable for policy authors (docs/policies.md):
 *   principal Workload::"<issuer name>/<subject>" { issuer, subject, kind, claims }
 *   actions   Action::"declareTask" | "issue" | "approve" | "revoke"
 *   resource  Grant::"<name>" { provider, sensitivity, approval, entitlement }   (declareTask: Task::"<id>")
 *   context   { task: { id, purpose, ticket, ref, ageSeconds, grants }, ttlSeconds, approved, activeLeases,
 *               entitled, entitlement?: { id, owner, purpose, expiresInSeconds, enrolment: { id, owner } } }
 * Absent ticket/ref are "" so `like` works without `has`.
 */
export type PolicyAction = 'declareTask' | 'issue' | 'approve' | 'revoke';

export interface PolicyRequest {
  principal: { type: string; id: string };
  action: { type: string; id: string };
  resource: { type: string; id: string };
  context: Context;
  entities: EntityJson[];
}

export interface GrantFacts {
  name: string;
  provider: string;
  sensitivity: string;
  approval: string;
  /** `none` when omitted. */
  entitlement?: string;
}

/** The active entitlement a workload holds to the grant (issue only), as Cedar sees it. */
export interface EntitlementFacts {
  id: string;
  owner: string;
  purpose: string;
  expiresInSeconds: number;
  enrolment: { id: string; owner: string };
}

/**
 * A workload's id carries its issuer: `<issuer name>/<subject>`. A subject alone is another issuer's too
 * (two issuers may both have a `release-agent`); issuer names hold no `/`, so the split is unambiguous.
 */
export const workloadId = (identity: Pick<Identity, 'issuer' | 'subject'>) =>
  `${identity.issuer}/${identity.subject}`;

const workload = (identity: Identity): EntityJson => ({
  uid: { type: 'Workload', id: workloadId(identity) },
  attrs: { issuer: identity.issuer, subject: identity.subject, kind: identity.kind, claims: identity.claims },
  parents: [],
});

const taskContext = (
  task: Pick<Task, 'id' | 'purpose' | 'ticket' | 'ref' | 'grants' | 'createdAtMs'>,
  nowMs: number,
) => ({
  id: task.id,
  purpose: task.purpose,
  ticket: task.ticket,
  ref: task.ref,
  grants: task.grants,
  ageSeconds: Math.max(0, Math.floor((nowMs - task.createdAtMs) / 1000)),
});

export function declareTaskRequest(
  identity: Identity,
  task: Task,
  ttlSeconds: number,
  nowMs: number,
): PolicyRequest {
  return {
    principal: { type: 'Workload', id: workloadId(identity) },
    action: { type: 'Action', id: 'declareTask' },
    resource: { type: 'Task', id: task.id },
    context: {
      task: taskContext(task, nowMs),
      ttlSeconds,
      approved: false,
      activeLeases: 0,
      entitled: false,
    },
    entities: [workload(identity), { uid: { type: 'Task', id: task.id }, attrs: {}, parents: [] }],
  };
}

/** What the broker knows of the request beyond identity, task and grant. */
export interface IssueFacts {
  ttlSeconds: number;
  /** A step-up approval bound to this task, grant and TTL was presented and is valid. */
  approved: boolean;
  /**
   * The workload's active entitlement to the grant, or null: none, or not looked up because neither the
   * grant nor any policy needs it (then no policy reads `context.entitled`, so `false` changes nothing).
   */
  entitlement?: EntitlementFacts | null;
}

export function issueRequest(
  identity: Identity,
  task: Task & { activeLeases: number },
  grant: GrantFacts,
  facts: IssueFacts,
  nowMs: number,
): PolicyRequest {
  const { ttlSeconds, approved, entitlement } = facts;
  return {
    principal: { type: 'Workload', id: workloadId(identity) },
    action: { type: 'Action', id: 'issue' },
    resource: { type: 'Grant', id: grant.name },
    context: {
      task: taskContext(task, nowMs),
      ttlSeconds,
      approved,
      activeLeases: task.activeLeases,
      // Always present, so a policy may read it without `has`; the record only when entitled.
      entitled: Boolean(entitlement),
      ...(entitlement ? { entitlement: { ...entitlement } } : {}),
    },
    entities: [
      workload(identity),
      {
        uid: { type: 'Grant', id: grant.name },
        attrs: {
          provider: grant.provider,
          sensitivity: grant.sensitivity,
          approval: grant.approval,
          entitlement: grant.entitlement ?? 'none',
        },
        parents: [],
      },
    ],
  };
}
