import { BrokerError } from '../domain/errors';
import type { Identity, TaskOutcome } from '../domain/types';
import { signTaskRecord } from '../tasks/task-record';
import type { BrokerDeps } from './deps';
import { loadOwnTask } from './load-own-task';
import { requestRevocation } from './request-revocation';

/** Closes the task, starts revocation of every lease in it, and returns the signed task record. */
export async function completeTask(
  deps: Pick<BrokerDeps, 'config' | 'tasks' | 'leases' | 'queue' | 'audit' | 'signingKeys' | 'nowMs'>,
  identity: Identity,
  taskId: string,
  input: { outcome: TaskOutcome; summary?: string },
) {
  const nowMs = deps.nowMs();
  await loadOwnTask(deps, identity, taskId, nowMs);
  const result = await deps.tasks.complete(taskId, input.outcome, input.summary ?? '', nowMs);
  if (result === 'missing') throw new BrokerError('not_found', 'no such task');
  const leases = await deps.leases.getMany(await deps.tasks.leaseIds(taskId));
  const actor = `${identity.issuer}/${identity.subject}`;
  if (result === 'already') {
    // A completion that failed half-way (task closed, revocations not started) is finished by the retry.
    await requestRevocation(deps, leases, 'task completed', actor);
    throw new BrokerError('task_already_completed', 'the task was already completed');
  }
  const revocation = await requestRevocation(deps, leases, `task completed: ${input.outcome}`, actor);
  const task = await deps.tasks.get(taskId, nowMs);
  if (!task) throw new BrokerError('not_found', 'no such task');
  await deps.audit.append({
    type: 'task.completed',
    atMs: nowMs,
    issuer: identity.issuer,
    subject: identity.subject,
    task: taskId,
    ticket: task.ticket,
    ref: task.ref,
    reason: input.outcome,
    detail: { leases: leases.length, revocationsStarted: revocation.revoked },
  });
  const record = await signTaskRecord(deps.signingKeys, deps.config.broker.issuer, task, leases, nowMs);
  return { taskId, outcome: input.outcome, revokedLeases: revocation.leaseIds, record };
}
