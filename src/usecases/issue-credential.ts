import { createHash } from 'node:crypto';
import { serializeAuditEvent, type AuditEvent } from '../audit/audit-log';
import type { GrantConfig } from '../config/schema';
import { BrokerError } from '../domain/errors';
import type { Identity, Lease } from '../domain/types';
import { issueRequest } from '../policy/vocabulary';
import type { CredentialProvider } from '../providers/provider';
import type { StoredTask } from '../tasks/task-store';
import type { BrokerDeps } from './deps';
import { loadOwnTask } from './load-own-task';

export interface IssueCredentialInput {
  grant: string;
  ttlSeconds?: number;
  reason?: string;
  /** Narrows a jwt grant's scopes (token exchange's `scope`); never widens them. */
  scopes?: readonly string[];
}

type Deps = Pick<
  BrokerDeps,
  'config' | 'tasks' | 'leases' | 'queue' | 'policy' | 'providers' | 'audit' | 'events' | 'nowMs' | 'newId'
>;

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

/**
 * verify identity (done by the caller) → load task → evaluate policy → provider mints → record lease (with
 * its audit entry, atomically) → schedule revocation. The lease is durable before the credential leaves.
 */
export async function issueCredential(
  deps: Deps,
  identity: Identity,
  taskId: string,
  input: IssueCredentialInput,
) {
  const startedMs = performance.now();
  const nowMs = deps.nowMs();
  const task = await loadOwnTask(deps, identity, taskId, nowMs);
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

  const who = {
    issuer: identity.issuer,
    subject: identity.subject,
    task: task.id,
    ticket: task.ticket,
    ref: task.ref,
  };
  const facts = {
    name: input.grant,
    provider: grant.provider,
    sensitivity: grant.sensitivity,
    approval: grant.approval,
  };
  const decision = deps.policy.evaluate(issueRequest(identity, task, facts, ttlSeconds, nowMs));
  if (!decision.allowed) {
    deps.events.denied('issue', decision.reason, { ...who, grant: input.grant });
    await deps.audit.append({
      type: 'credential.denied',
      atMs: nowMs,
      ...who,
      grant: input.grant,
      tokenSha256: identity.tokenSha256,
      reason: decision.reason,
    });
    throw new BrokerError('policy_denied', `the policy does not permit grant ${input.grant} for this task`);
  }

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
  const leaseId = deps.newId();
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
    ...who,
    grant: input.grant,
    lease: leaseId,
    tokenSha256: identity.tokenSha256,
    credentialSha256: lease.credentialSha256,
    reason: decision.reason,
    detail: {
      ttlSeconds,
      provider: grant.provider,
      // Backend identifiers (an STS session id and access key id) tie the backend's own logs to this lease.
      ...(grant.provider === 'jwt' ? {} : minted.handle),
      ...(input.reason ? { requestReason: input.reason } : {}),
      ...(scopes ? { scopes: scopes.join(' ') } : {}),
    },
  };
  // The expiry job goes out with the lease write (one round trip). A job whose lease was never written is
  // cancelled, and would find no lease anyway; a lost schedule is covered by the sweeper at expiry.
  const scheduled = deps.queue.scheduleExpiry(leaseId, expiresAtMs, nowMs).then(
    () => true,
    (error: Error) => {
      deps.events.scheduleFailed(leaseId, error.message);
      return false;
    },
  );
  try {
    await recordLease(deps, provider, lease, audit, nowMs);
  } catch (error) {
    if (await scheduled) await deps.queue.cancelExpiry(leaseId).catch(() => undefined);
    throw error;
  }
  await scheduled;
  deps.events.issued(input.grant, grant.provider, performance.now() - startedMs);
  const expiresAt = new Date(expiresAtMs).toISOString();
  // An STS session outlives a lease shorter than 15 minutes: say when it dies at its source as well.
  const notAfter = minted.notAfterMs ? new Date(minted.notAfterMs).toISOString() : undefined;
  return {
    leaseId,
    grant: input.grant,
    provider: grant.provider,
    expiresAt,
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

/** Writes the lease and its audit entry; if that fails, the credential is revoked at once and never returned. */
async function recordLease(
  deps: Pick<Deps, 'config' | 'leases' | 'events'>,
  provider: CredentialProvider,
  lease: Lease,
  audit: AuditEvent,
  nowMs: number,
): Promise<void> {
  // The credential exists at its source but never leaves the broker: revoke it now; a failure is reported.
  const revokeUnissued = (why: string) =>
    provider
      .revoke(lease, { nowMs, neverIssued: true })
      .catch((revokeError: Error) =>
        deps.events.revocationFailed(
          lease.id,
          lease.provider,
          `credential minted but ${why}; revoking it failed: ${revokeError.message}`,
          false,
        ),
      );
  let result: string;
  try {
    const options = {
      maxActiveLeases: deps.config.broker.maxActiveLeases,
      maxActiveLeasesPerIdentity: deps.config.broker.maxActiveLeasesPerIdentity,
      maxActiveLeasesPerTask: deps.config.broker.maxActiveLeasesPerTask,
      nowMs,
      auditEntry: serializeAuditEvent(audit),
    };
    result = await deps.leases.create(lease, options);
  } catch (error) {
    await revokeUnissued('never recorded nor returned');
    throw new BrokerError('unavailable', 'the lease could not be recorded; no credential was issued', {
      cause: error,
    });
  }
  if (result === 'ok') return;
  await revokeUnissued(`refused a lease (${result})`);
  if (result === 'cap')
    throw new BrokerError('lease_limit_reached', 'the broker has reached its cap on active leases');
  if (result === 'identity_cap' || result === 'task_cap') throw quotaError(deps, result);
  throw new BrokerError('internal', 'lease id collision', { detail: `lease ${lease.id} existed` });
}

function quotaError(deps: Pick<Deps, 'config'>, which: 'identity_cap' | 'task_cap'): BrokerError {
  const { maxActiveLeasesPerIdentity, maxActiveLeasesPerTask } = deps.config.broker;
  return which === 'identity_cap'
    ? new BrokerError(
        'lease_limit_reached',
        `this identity holds its quota of ${maxActiveLeasesPerIdentity} active leases`,
      )
    : new BrokerError(
        'lease_limit_reached',
        `this task holds its quota of ${maxActiveLeasesPerTask} active leases`,
      );
}
