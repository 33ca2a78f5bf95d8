import { createHash } from 'node:crypto';
import type { AuditEvent } from '../audit/audit-log';
import type { GrantConfig } from '../config/schema';
import { BrokerError } from '../domain/errors';
import type { Identity, Lease } from '../domain/types';
import type { Approval } from '../approvals/approval';
import { decideIssue } from '../policy/issue-decision';
import { issueRequest, type EntitlementFacts } from '../policy/vocabulary';
import type { StoredTask } from '../tasks/task-store';
import type { BrokerDeps } from './deps';
import { entitlementMatters, findEntitlement } from './find-entitlement';
import { loadOwnTask } from './load-own-task';
import { quotaError, recordLease } from './record-lease';
import { checkPresentedApproval, requestStepUp, type PendingStepUp } from './step-up';

export interface IssueCredentialInput {
  grant: string;
  ttlSeconds?: number;
  reason?: string;
  /** Narrows a jwt grant's scopes (token exchange's `scope`); never widens them. */
  scopes?: readonly string[];
  /** A step-up approval for this task, grant and TTL, once an approver has approved it. */
  approvalId?: string;
}

/** What issuing needs; token exchange, which issues, takes these and its own. */
export type IssueDeps = Pick<
  BrokerDeps,
  | 'config'
  | 'tasks'
  | 'leases'
  | 'queue'
  | 'policy'
  | 'providers'
  | 'audit'
  | 'refusals'
  | 'approvals'
  | 'entitlements'
  | 'events'
  | 'nowMs'
  | 'newId'
  | 'newLeaseId'
>;
type Deps = IssueDeps;

/** A credential call's answer: the credential, or (202) the step-up request it waits on. */
export type IssueResult = Awaited<ReturnType<typeof mint>> | { pending: PendingStepUp };

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

/**
 * verify identity (done by the caller) → load task → entitlement (when the grant or a policy needs one) →
 * evaluate policy (→ step-up: a human approves first) →
 * provider mints → record lease (with its audit entry, atomically) → schedule revocation. The lease is
 * durable before the credential leaves.
 */
export async function issueCredential(
  deps: Deps,
  identity: Identity,
  taskId: string,
  input: IssueCredentialInput,
): Promise<IssueResult> {
  const startedMs = performance.now();
  const nowMs = deps.nowMs();
  // A cached task's activeLeases is as it was read: live when a policy reads it.
  const task = await loadOwnTask(deps, identity, taskId, nowMs, {
    live: deps.policy.readsContext('activeLeases'),
  });
  const grant = checkGrant(deps, task, input.grant);
  const scopes = narrowScopes(grant, input.scopes);
  // Clamped, never refused: the grant's maximum and the task's remaining time bound every lease.
  const taskRemainingSeconds = Math.floor((task.expiresAtMs - nowMs) / 1000);
  const ttlSeconds = Math.min(
    input.ttlSeconds ?? grant.maxTtlSeconds,
    grant.maxTtlSeconds,
    taskRemainingSeconds,
  );
  if (ttlSeconds < 1) throw new BrokerError('task_not_open', 'the task expires in less than a second');

  // Checked against now on every request: an expired or revoked entitlement (or enrolment) stops issuance.
  const entitlement = entitlementMatters(deps.policy, grant)
    ? await findEntitlement(deps, identity, input.grant, nowMs)
    : null;
  if (grant.entitlement === 'required' && !entitlement)
    return deny(deps, { identity, task, input, nowMs }, 'not_entitled', 'no active entitlement to the grant');

  let approval: Approval | null = null;
  if (input.approvalId) {
    const bound = { task, grant: input.grant, ttlSeconds, nowMs };
    const presented = await checkPresentedApproval(deps, input.approvalId, bound);
    if (presented.pending) return { pending: presented.pending };
    approval = presented.approval;
  }
  const request: IssueRequest = {
    identity,
    task,
    grant,
    input,
    ttlSeconds,
    scopes,
    approval,
    entitlement,
    nowMs,
  };
  const outcome = decideIssue(
    deps.policy,
    (approved) =>
      issueRequest(
        identity,
        task,
        grantFacts(input.grant, grant),
        { ttlSeconds, approved, entitlement },
        nowMs,
      ),
    { approvalRequired: grant.approval === 'required', approvedPresented: approval !== null },
  );
  if (outcome.kind === 'deny') return deny(deps, request, 'policy_denied', outcome.decision.reason);
  if (outcome.kind === 'step-up') {
    const ask = { identity, task, grant: input.grant, ttlSeconds, reason: input.reason, nowMs };
    return { pending: await requestStepUp(deps, { ...ask, policyReason: outcome.decision.reason }) };
  }
  const issued = await mint(deps, request, outcome.decision.reason);
  deps.events.issued(input.grant, grant.provider, performance.now() - startedMs);
  return issued;
}

/** Everything one credential call settled on before the policy decided. */
interface IssueRequest {
  identity: Identity;
  task: StoredTask;
  grant: GrantConfig;
  input: IssueCredentialInput;
  ttlSeconds: number;
  scopes: readonly string[] | undefined;
  /** The step-up approval presented (approved, bound to this request), used up with the lease. */
  approval: Approval | null;
  /** The workload's active entitlement to the grant, when it was looked up and found. */
  entitlement: EntitlementFacts | null;
  nowMs: number;
}

const grantFacts = (name: string, grant: GrantConfig) => ({
  name,
  provider: grant.provider,
  sensitivity: grant.sensitivity,
  approval: grant.approval,
  entitlement: grant.entitlement,
});

/**
 * Who and which task, as every lease event says it (leaseAuditFields). The task's ticket and ref are facts of
 * the task, in its `task.declared`: a credential event names the task rather than repeating them.
 */
const whoOf = ({ identity, task }: Pick<IssueRequest, 'identity' | 'task'>) => ({
  issuer: identity.issuer,
  subject: identity.subject,
  task: task.id,
});

/** A refusal, audited (`credential.denied`) with its reason: the policy's, or the missing entitlement. */
async function deny(
  deps: Deps,
  request: Pick<IssueRequest, 'identity' | 'task' | 'input' | 'nowMs'>,
  code: 'policy_denied' | 'not_entitled',
  reason: string,
): Promise<never> {
  const { identity, input, nowMs } = request;
  const who = whoOf(request);
  deps.events.denied('issue', reason, { ...who, grant: input.grant });
  await deps.refusals.record({
    type: 'credential.denied',
    atMs: nowMs,
    ...who,
    grant: input.grant,
    tokenSha256: identity.tokenSha256,
    reason,
    ...(code === 'not_entitled' ? { detail: { error: code } } : {}),
  });
  if (code === 'not_entitled')
    throw new BrokerError(
      code,
      `grant ${input.grant} needs an active entitlement, and this workload holds none`,
    );
  throw new BrokerError('policy_denied', `the policy does not permit grant ${input.grant} for this task`);
}

/** quota → provider mints → lease and audit entry recorded (the approval used up with them) → expiry job. */
async function mint(deps: Deps, request: IssueRequest, policyReason: string) {
  const { identity, task, grant, input, ttlSeconds, scopes, approval, nowMs } = request;
  const overQuota = await deps.leases.quotaReached(
    { taskId: task.id, issuer: identity.issuer, subject: identity.subject },
    {
      perIdentity: deps.config.broker.maxActiveLeasesPerIdentity,
      perTask: deps.config.broker.maxActiveLeasesPerTask,
    },
  );
  if (overQuota) throw quotaError(deps, overQuota);
  const provider = deps.providers.get(grant.provider);
  if (!provider)
    throw new BrokerError('internal', 'provider missing', { detail: `no provider ${grant.provider}` });
  const leaseId = deps.newLeaseId();
  const expiresAtMs = nowMs + ttlSeconds * 1000;
  const minted = await provider.mint({
    leaseId,
    grantName: input.grant,
    grant,
    identity,
    task,
    issuedAtMs: nowMs,
    expiresAtMs,
    scopes,
  });
  const lease: Lease = {
    id: leaseId,
    taskId: task.id,
    grant: input.grant,
    provider: grant.provider,
    issuer: identity.issuer,
    subject: identity.subject,
    state: 'active',
    createdAtMs: nowMs,
    expiresAtMs,
    handle: minted.handle,
    credentialSha256: sha256Hex(minted.secret),
    attempts: 0,
  };
  const audit: AuditEvent = {
    type: 'credential.issued',
    atMs: nowMs,
    ...whoOf(request),
    grant: input.grant,
    lease: leaseId,
    tokenSha256: identity.tokenSha256,
    credentialSha256: lease.credentialSha256,
    reason: policyReason,
    detail: {
      ttlSeconds,
      provider: grant.provider,
      // Backend identifiers (an STS session id and access key id) tie the backend's own logs to this lease.
      ...(grant.provider === 'jwt' ? {} : minted.handle),
      ...(input.reason ? { requestReason: input.reason } : {}),
      ...(scopes ? { scopes: scopes.join(' ') } : {}),
      ...(approval ? { approvalId: approval.id, approvedBy: approval.decision?.by ?? '' } : {}),
      ...(request.entitlement ? { entitlementId: request.entitlement.id } : {}),
    },
  };
  // No job per lease: the lease's entry in the due index, written with it, is its revocation schedule (the
  // worker's scheduler queues it when it is due).
  await recordLease(deps, provider, lease, { audit, approvalId: approval?.id, nowMs });
  // An STS session outlives a lease shorter than 15 minutes: say when it dies at its source as well.
  const notAfter = minted.notAfterMs ? new Date(minted.notAfterMs).toISOString() : undefined;
  return {
    leaseId,
    grant: input.grant,
    provider: grant.provider,
    expiresAt: new Date(expiresAtMs).toISOString(),
    notAfter,
    credential: minted.credential,
  };
}

function checkGrant(deps: Pick<Deps, 'config'>, task: StoredTask, grantName: string): GrantConfig {
  if (task.state !== 'open') throw new BrokerError('task_not_open', `the task is ${task.state}`);
  // Own keys only: `constructor` or `__proto__` must not pass for a grant.
  const grant = Object.hasOwn(deps.config.grants, grantName) ? deps.config.grants[grantName] : undefined;
  if (!grant) throw new BrokerError('unknown_grant', `unknown grant: ${grantName}`);
  if (task.grants.length > 0 && !task.grants.includes(grantName)) {
    throw new BrokerError('grant_not_declared', `the task did not declare grant ${grantName}`);
  }
  return grant;
}

/** The scopes asked for, when they narrow the grant's; refused when they would widen them. */
function narrowScopes(
  grant: GrantConfig,
  asked: readonly string[] | undefined,
): readonly string[] | undefined {
  if (!asked) return undefined;
  const allowed: readonly string[] = grant.provider === 'jwt' ? grant.scopes : [];
  const extra = asked.filter((scope) => !allowed.includes(scope));
  if (extra.length > 0)
    throw new BrokerError(
      'invalid_scope',
      `scope may only narrow the grant's scopes; not allowed: ${extra.join(' ')}`,
    );
  return [...new Set(asked)];
}
