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

type Deps = Pick<
  BrokerDeps,
  'config' | 'tasks' | 'policy' | 'audit' | 'refusals' | 'signingKeys' | 'events' | 'nowMs' | 'newId'
>;

export async function declareTask(deps: Deps, identity: Identity, input: DeclareTaskInput) {
  const { config } = deps;
  const unknown = (input.grants ?? []).filter((grant) => !Object.hasOwn(config.grants, grant));
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
  const reason = await authorizeDeclaration(deps, identity, task, ttlSeconds, nowMs);
  const created = await deps.tasks.create(task, nowMs);
  if (created === 'task_quota') throw openTasksQuotaError(deps);
  if (created === 'exists')
    throw new BrokerError('internal', 'task id collision', { detail: `task ${task.id} existed` });
  await auditDeclared(deps, identity, task, { reason, ttlSeconds, nowMs });
  const record = await signTaskRecord(deps.signingKeys, config.broker.issuer, task, [], nowMs);
  return {
    taskId: task.id,
    expiresAt: new Date(task.expiresAtMs).toISOString(),
    identity: { issuer: identity.issuer, subject: identity.subject, kind: identity.kind },
    record,
  };
}

/** The identity holds `broker.maxOpenTasksPerIdentity` open tasks: counted and refused. */
export function openTasksQuotaError(deps: Pick<Deps, 'config' | 'events'>): BrokerError {
  deps.events.quotaRefused('open_tasks_per_identity');
  return new BrokerError(
    'task_limit_reached',
    `this identity holds its quota of ${deps.config.broker.maxOpenTasksPerIdentity} open tasks: complete one first`,
  );
}

/** The policy's `declareTask` decision for `task`; a denial is counted, audited and thrown. */
export async function authorizeDeclaration(
  deps: Pick<Deps, 'policy' | 'refusals' | 'events'>,
  identity: Identity,
  task: Task,
  ttlSeconds: number,
  nowMs: number,
): Promise<string> {
  const decision = await deps.policy.evaluate(declareTaskRequest(identity, task, ttlSeconds, nowMs));
  if (decision.allowed) return decision.reason;
  deps.events.denied('declareTask', decision.reason, { issuer: identity.issuer, subject: identity.subject });
  await deps.refusals.record({
    type: 'task.denied',
    atMs: nowMs,
    issuer: identity.issuer,
    subject: identity.subject,
    tokenSha256: identity.tokenSha256,
    ticket: task.ticket,
    ref: task.ref,
    reason: decision.reason,
  });
  throw new BrokerError('policy_denied', 'the policy does not permit declaring this task');
}

export async function auditDeclared(
  deps: Pick<Deps, 'audit'>,
  identity: Identity,
  task: Task,
  facts: { reason: string; ttlSeconds: number; nowMs: number },
): Promise<void> {
  await deps.audit.append({
    type: 'task.declared',
    atMs: facts.nowMs,
    issuer: identity.issuer,
    subject: identity.subject,
    tokenSha256: identity.tokenSha256,
    task: task.id,
    ticket: task.ticket,
    ref: task.ref,
    reason: facts.reason,
    detail: {
      purpose: task.purpose,
      ttlSeconds: facts.ttlSeconds,
      // The job's signed claims (repository, run, attempt...) say which run the task was.
      ...Object.fromEntries(Object.entries(task.job ?? {}).map(([claim, value]) => [`job.${claim}`, value])),
    },
  });
}
