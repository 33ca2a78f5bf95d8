import { createHash } from 'node:crypto';
import { BrokerError } from '../domain/errors';
import type { Identity, Lease } from '../domain/types';
import { issueRequest } from '../policy/vocabulary';
import type { BrokerDeps } from './deps';
import { loadOwnTask } from './load-own-task';

export interface IssueCredentialInput {
  grant: string;
  ttlSeconds?: number;
  reason?: string;
}

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

/**
 * verify identity (done by the caller) → load task → evaluate policy → provider mints → record lease →
 * schedule revocation → audit. The lease is durable before the credential leaves.
 */
export async function issueCredential(
  deps: Pick<
    BrokerDeps,
    'config' | 'tasks' | 'leases' | 'queue' | 'policy' | 'providers' | 'audit' | 'events' | 'nowMs' | 'newId'
  >,
  identity: Identity,
  taskId: string,
  input: IssueCredentialInput,
) {
  const startedMs = performance.now();
  const nowMs = deps.nowMs();
  const task = await loadOwnTask(deps.tasks, identity, taskId, nowMs);
  if (task.state !== 'open') throw new BrokerError('task_not_open', `the task is ${task.state}`);
  const grant = deps.config.grants[input.grant];
  if (!grant) throw new BrokerError('unknown_grant', `unknown grant: ${input.grant}`);
  if (task.grants.length > 0 && !task.grants.includes(input.grant)) {
    throw new BrokerError('grant_not_declared', `the task did not declare grant ${input.grant}`);
  }
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
    grant: input.grant,
  };
  const grantFacts = {
    name: input.grant,
    provider: grant.provider,
    sensitivity: grant.sensitivity,
    approval: grant.approval,
  };
  const decision = deps.policy.evaluate(issueRequest(identity, task, grantFacts, ttlSeconds, nowMs));
  if (!decision.allowed) {
    deps.events.denied('issue', decision.reason, {
      issuer: identity.issuer,
      subject: identity.subject,
      grant: input.grant,
      task: task.id,
    });
    await deps.audit.append({
      type: 'credential.denied',
      atMs: nowMs,
      ...who,
      tokenSha256: identity.tokenSha256,
      reason: decision.reason,
    });
    throw new BrokerError('policy_denied', `the policy does not permit grant ${input.grant} for this task`);
  }

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
  await recordLease(deps, provider, lease, nowMs);

  // A lost schedule is not a lost lease: the sweeper finds it in the due index at expiry.
  await deps.queue
    .scheduleExpiry(leaseId, expiresAtMs, nowMs)
    .catch((error: Error) =>
      deps.events.revocationFailed(
        leaseId,
        grant.provider,
        `schedule failed, sweeper will act: ${error.message}`,
        false,
      ),
    );
  await deps.audit.append({
    type: 'credential.issued',
    atMs: nowMs,
    ...who,
    lease: leaseId,
    tokenSha256: identity.tokenSha256,
    credentialSha256: lease.credentialSha256,
    reason: decision.reason,
    detail: {
      ttlSeconds,
      provider: grant.provider,
      ...(input.reason ? { requestReason: input.reason } : {}),
    },
  });
  deps.events.issued(input.grant, grant.provider, performance.now() - startedMs);
  return {
    leaseId,
    grant: input.grant,
    provider: grant.provider,
    expiresAt: new Date(expiresAtMs).toISOString(),
    credential: minted.credential,
  };
}

/** Writes the lease; if that fails, the credential is revoked at once and never returned. */
async function recordLease(
  deps: Pick<BrokerDeps, 'config' | 'leases' | 'events'>,
  provider: { revoke: (lease: Lease, context: { nowMs: number }) => Promise<unknown> },
  lease: Lease,
  nowMs: number,
): Promise<void> {
  let result: string;
  try {
    result = await deps.leases.create(lease, deps.config.broker.maxActiveLeases, nowMs);
  } catch (error) {
    await provider
      .revoke(lease, { nowMs })
      .catch((revokeError: Error) =>
        deps.events.revocationFailed(
          lease.id,
          lease.provider,
          `unrecorded credential: ${revokeError.message}`,
          true,
        ),
      );
    throw new BrokerError('unavailable', 'the lease could not be recorded; no credential was issued', {
      cause: error,
    });
  }
  if (result === 'ok') return;
  await provider.revoke(lease, { nowMs }).catch(() => undefined);
  if (result === 'cap')
    throw new BrokerError('lease_limit_reached', 'the broker has reached its cap on active leases');
  if (result === 'task_not_open')
    throw new BrokerError('task_not_open', 'the task was completed or expired meanwhile');
  throw new BrokerError('internal', 'lease id collision', { detail: `lease ${lease.id} existed` });
}
