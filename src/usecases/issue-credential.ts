import type { AuditEvent } from '../audit/audit-log';
import type { GrantConfig } from '../config/schema';
import { BrokerError } from '../domain/errors';
import { sha256Hex } from '../domain/sha256';
import type { Identity, Lease } from '../domain/types';
import type { IssueOutcome } from '../policy/issue-decision';
import { issueRequest } from '../policy/vocabulary';
import type { CredentialProvider, MintedCredential } from '../providers/provider';
import type { StoredTask } from '../tasks/task-store';
import type { BrokerDeps } from './deps';
import { entitlementMatters, findEntitlement } from './find-entitlement';
import type { IssueCredentialInput, IssueRequest } from './issue-request';
import { loadOwnTask } from './load-own-task';
import { checkLeaseQuota, recordLease } from './record-lease';
import { checkPresentedApproval, requestStepUp, type PendingStepUp } from './step-up';

export type { IssueCredentialInput } from './issue-request';

/** What issuing needs; token exchange, which issues, takes these and its own. */
export type IssueDeps = Pick<
  BrokerDeps,
  | 'config'
  | 'tasks'
  | 'leases'
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

/** A credential as the caller gets it. */
export interface IssuedCredential {
  leaseId: string;
  grant: string;
  provider: GrantConfig['provider'];
  expiresAt: string;
  /** When an STS session dies at its source, if later than the lease (sessions last at least 15 minutes). */
  notAfter: string | undefined;
  credential: MintedCredential['credential'];
}

/** A credential call's answer: the credential, or (202) the step-up request it waits on. */
export type IssueResult = IssuedCredential | { pending: PendingStepUp };

/**
 * One credential call, step by step, each reading the request the first steps built:
 * task → check-grant → clamp-ttl → entitlement (when the grant or a policy needs one) → approval (one
 * presented) → policy (→ step-up: a human approves first) → lease quota → mint → record (the lease, its
 * schedule and its audit entry, atomically). The identity was verified by the caller. The lease is durable
 * before the credential leaves.
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
  const request: IssueRequest = {
    identity,
    task,
    input,
    grant,
    scopes: narrowScopes(grant, input.scopes),
    ttlSeconds: clampTtl(grant, task, input, nowMs),
    entitlement: null,
    approval: null,
    nowMs,
  };

  // Checked against now on every request: an expired or revoked entitlement (or enrolment) stops issuance.
  if (entitlementMatters(deps.policy, grant))
    request.entitlement = await findEntitlement(deps, identity, input.grant, nowMs);
  if (grant.entitlement === 'required' && !request.entitlement)
    return deny(deps, request, 'not_entitled', 'no active entitlement to the grant');

  if (input.approvalId) {
    const presented = await checkPresentedApproval(deps, input.approvalId, request);
    if (presented.pending) return { pending: presented.pending };
    request.approval = presented.approval;
  }

  const outcome = await decide(deps, request);
  if (outcome.kind === 'deny') return deny(deps, request, 'policy_denied', outcome.decision.reason);
  if (outcome.kind === 'step-up')
    return { pending: await requestStepUp(deps, request, outcome.decision.reason) };

  await checkLeaseQuota(deps, { taskId: task.id, issuer: identity.issuer, subject: identity.subject });
  const { provider, lease, minted } = await mint(deps, request);
  await recordLease(deps, provider, lease, {
    audit: issuedEvent(request, lease, minted, outcome.decision.reason),
    approvalId: request.approval?.id,
    nowMs,
  });
  deps.events.issued(input.grant, grant.provider, performance.now() - startedMs);
  return {
    leaseId: lease.id,
    grant: input.grant,
    provider: grant.provider,
    expiresAt: new Date(lease.expiresAtMs).toISOString(),
    notAfter: minted.notAfterMs ? new Date(minted.notAfterMs).toISOString() : undefined,
    credential: minted.credential,
  };
}

/** check-grant: the task is open, the grant exists and the task declared it. */
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

/** clamp-ttl: clamped, never refused. The grant's maximum and the task's remaining time bound every lease. */
function clampTtl(grant: GrantConfig, task: StoredTask, input: IssueCredentialInput, nowMs: number) {
  const taskRemainingSeconds = Math.floor((task.expiresAtMs - nowMs) / 1000);
  const ttlSeconds = Math.min(
    input.ttlSeconds ?? grant.maxTtlSeconds,
    grant.maxTtlSeconds,
    taskRemainingSeconds,
  );
  if (ttlSeconds < 1) throw new BrokerError('task_not_open', 'the task expires in less than a second');
  return ttlSeconds;
}

/** policy: Cedar decides on this request, as unapproved and (to tell step-up from deny) as approved, on one set. */
function decide(deps: Pick<Deps, 'policy'>, request: IssueRequest): Promise<IssueOutcome> {
  const { identity, task, input, grant, ttlSeconds, entitlement, approval, nowMs } = request;
  const facts = {
    name: input.grant,
    provider: grant.provider,
    sensitivity: grant.sensitivity,
    approval: grant.approval,
    entitlement: grant.entitlement,
  };
  return deps.policy.decideIssue(
    issueRequest(identity, task, facts, { ttlSeconds, approved: false, entitlement }, nowMs),
    { approvalRequired: grant.approval === 'required', approvedPresented: approval !== null },
  );
}

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
  request: IssueRequest,
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

/** mint: the grant's provider mints the credential; the lease is what the broker will record of it. */
async function mint(
  deps: Pick<Deps, 'providers' | 'newLeaseId'>,
  request: IssueRequest,
): Promise<{ provider: CredentialProvider; lease: Lease; minted: MintedCredential }> {
  const { identity, task, input, grant, ttlSeconds, scopes, nowMs } = request;
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
  return { provider, lease, minted };
}

/** The lease's `credential.issued`, written with it. */
function issuedEvent(
  request: IssueRequest,
  lease: Lease,
  minted: MintedCredential,
  policyReason: string,
): AuditEvent {
  const { identity, input, grant, ttlSeconds, scopes, approval, entitlement, nowMs } = request;
  return {
    type: 'credential.issued',
    atMs: nowMs,
    ...whoOf(request),
    grant: input.grant,
    lease: lease.id,
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
      ...(entitlement ? { entitlementId: entitlement.id } : {}),
    },
  };
}
