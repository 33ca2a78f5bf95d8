import type { PolicyDecision, PolicyEngine } from './cedar-engine';
import type { PolicyRequest } from './vocabulary';

/**
 * `allow`: issue now. `step-up`: issue once a human approves (the grant says `approval: required`, or the
 * policy permits this request only with `context.approved`). `deny`: not even with an approval.
 */
export type IssueOutcome = { kind: 'allow' | 'step-up' | 'deny'; decision: PolicyDecision };

export interface IssueDecisionOptions {
  approvalRequired: boolean;
  approvedPresented: boolean;
}

/** The same request, as Cedar sees it once approved (`context.approved == true`). */
const approvedVariant = (request: PolicyRequest): PolicyRequest => ({
  ...request,
  context: { ...request.context, approved: true },
});

/**
 * Decides an issuance request (`request`, built with `context.approved == false`), with one engine and one
 * policy set throughout. `approvedPresented`: a valid approval bound to this request is in hand, so Cedar
 * sees `context.approved == true` and only its answer counts. Otherwise the request is evaluated as
 * unapproved, and — only when that is not enough — once more as approved, to tell step-up from deny.
 */
export function decideIssue(
  engine: Pick<PolicyEngine, 'evaluate'>,
  request: PolicyRequest,
  options: IssueDecisionOptions,
): IssueOutcome {
  if (options.approvedPresented) {
    const decision = engine.evaluate(approvedVariant(request));
    return { kind: decision.allowed ? 'allow' : 'deny', decision };
  }
  const unapproved = engine.evaluate(request);
  if (unapproved.allowed && !options.approvalRequired) return { kind: 'allow', decision: unapproved };
  const approved = engine.evaluate(approvedVariant(request));
  if (approved.allowed) return { kind: 'step-up', decision: approved };
  return { kind: 'deny', decision: unapproved.allowed ? approved : unapproved };
}
