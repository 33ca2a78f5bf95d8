import { BrokerError } from '../domain/errors';
import type { Identity, Task } from '../domain/types';
import { declareTaskRequest } from '../policy/vocabulary';
import { signTaskRecord } from '../tasks/task-record';
import type { BrokerDeps } from './deps';

export interface DeclareTaskInput {
  purpose: string;
  ticket?: string;
  ref?: string;
  grants?: string[];
  ttlSeconds?: number;
}

export async function declareTask(
  deps: Pick<
    BrokerDeps,
    'config' | 'tasks' | 'policy' | 'audit' | 'signingKeys' | 'events' | 'nowMs' | 'newId'
  >,
  identity: Identity,
  input: DeclareTaskInput,
) {
  const { config } = deps;
  const unknown = (input.grants ?? []).filter((grant) => !config.grants[grant]);
  if (unknown.length > 0) throw new BrokerError('unknown_grant', `unknown grant(s): ${unknown.join(', ')}`);
  const nowMs = deps.nowMs();
  const ttlSeconds = Math.min(
    input.ttlSeconds ?? config.broker.defaultTaskTtlSeconds,
    config.broker.maxTaskTtlSeconds,
  );
  const task: Task = {
    id: deps.newId(),
    issuer: identity.issuer,
    subject: identity.subject,
    kind: identity.kind,
    purpose: input.purpose,
    ticket: input.ticket ?? '',
    ref: input.ref ?? '',
    grants: [...new Set(input.grants ?? [])],
    createdAtMs: nowMs,
    // A task never outlives the broker's cap; its leases never outlive the task.
    expiresAtMs: nowMs + ttlSeconds * 1000,
    state: 'open',
  };

  const decision = deps.policy.evaluate(declareTaskRequest(identity, task, ttlSeconds, nowMs));
  const who = { issuer: identity.issuer, subject: identity.subject, tokenSha256: identity.tokenSha256 };
  if (!decision.allowed) {
    deps.events.denied('declareTask', decision.reason, {
      issuer: identity.issuer,
      subject: identity.subject,
    });
    await deps.audit.append({
      type: 'task.denied',
      atMs: nowMs,
      ...who,
      ticket: task.ticket,
      ref: task.ref,
      reason: decision.reason,
    });
    throw new BrokerError('policy_denied', 'the policy does not permit declaring this task');
  }

  await deps.tasks.create(task);
  await deps.audit.append({
    type: 'task.declared',
    atMs: nowMs,
    ...who,
    task: task.id,
    ticket: task.ticket,
    ref: task.ref,
    reason: decision.reason,
    detail: { purpose: task.purpose, ttlSeconds },
  });
  const record = await signTaskRecord(deps.signingKeys, config.broker.issuer, task, [], nowMs);
  return {
    taskId: task.id,
    expiresAt: new Date(task.expiresAtMs).toISOString(),
    identity: { issuer: identity.issuer, subject: identity.subject, kind: identity.kind },
    record,
  };
}
