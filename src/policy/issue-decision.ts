import type { PolicyDecision, PolicyEngine } from './cedar-engine';
import type { PolicyRequest } from './vocabulary';

/**
 * `allow`: issue now. `step-up`: issue once a human approves (the grant says `approval: required`, or the
 * policy permits this request only with `context.approved`). `deny`: not even with an approval.
 */
export type IssueOutcome = { kind: 'allow' | 'step-up' | 'deny'; decision: PolicyDecision };

/**
 * Decides an issuance request. `approvedPresented`: a valid approval bound to this request is in hand, so
 * Cedar sees `context.approved == true` and only its answer counts. Otherwise the request is evaluated as
 * unapproved, and — only when that is not enough — once more as approved, to tell step-up from deny.
 */
export function decideIssue(
  policy: Pick<PolicyEngine, 'evaluate'>,
  request: (approved: boolean) => PolicyRequest,
  options: { approvalRequired: boolean; approvedPresented: boolean },
): IssueOutcome {
  if (options.approvedPresented) {
    const decision = policy.evaluate(request(true));
    return { kind: decision.allowed ? 'allow' : 'deny', decision };
  }
  const unapproved = policy.evaluate(request(false));
  if (unapproved.allowed && !options.approvalRequired) return { kind: 'allow', decision: unapproved };
  const approved = policy.evaluate(request(true));
  if (approved.allowed) return { kind: 'step-up', decision: approved };
  return { kind: 'deny', decision: unapproved.allowed ? approved : unapproved };
}
