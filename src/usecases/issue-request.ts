import type { Approval } from '../approvals/approval';
import type { GrantConfig } from '../config/schema';
import type { Identity } from '../domain/types';
import type { EntitlementFacts } from '../policy/vocabulary';
import type { StoredTask } from '../tasks/task-store';

export interface IssueCredentialInput {
  grant: string;
  ttlSeconds?: number;
  reason?: string;
  /** Narrows a jwt grant's scopes (token exchange's `scope`); never widens them. */
  scopes?: readonly string[];
  /** A step-up approval for this task, grant and TTL, once an approver has approved it. */
  approvalId?: string;
}

/**
 * One credential call, built once by its first steps and read by every step after (issue-credential.ts):
 * what was asked, of which task, under which grant, for how long, with which entitlement and approval.
 */
export interface IssueRequest {
  identity: Identity;
  task: StoredTask;
  input: IssueCredentialInput;
  grant: GrantConfig;
  /** The scopes asked for, when they narrow the grant's; undefined: all of them. */
  scopes: readonly string[] | undefined;
  /** Clamped to the grant's maximum and the task's remaining time. */
  ttlSeconds: number;
  /** The workload's active entitlement to the grant, when it was looked up and found. */
  entitlement: EntitlementFacts | null;
  /** The step-up approval presented (approved, bound to this request), used up with the lease. */
  approval: Approval | null;
  nowMs: number;
}
