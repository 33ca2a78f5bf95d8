import type { Config } from '../config/schema';
import { BrokerError } from '../domain/errors';
import type { Identity } from '../domain/types';
import { jobClaimsOf, jobKeyOf } from '../identity/job-binding';
import type { StoredTask, TaskStore } from '../tasks/task-store';

/**
 * A task is visible only to the identity that declared it; a CI job's task only to tokens of that same job
 * (its signed job claims), since every job of a repository may share one subject. Anyone else's task
 * answers not_found, the same as a task that does not exist, so task ids cannot be probed.
 */
export async function loadOwnTask(
  deps: { tasks: TaskStore; config: Pick<Config, 'issuers'> },
  identity: Identity,
  taskId: string,
  nowMs: number,
  /** Issuance: an open task may come from the process's cache (TaskStore.getForIssue). */
  forIssue?: { live: boolean },
): Promise<StoredTask> {
  const task = forIssue
    ? await deps.tasks.getForIssue(taskId, nowMs, forIssue)
    : await deps.tasks.get(taskId, nowMs);
  if (
    !task ||
    task.issuer !== identity.issuer ||
    task.subject !== identity.subject ||
    !sameJob(task, identity, deps.config)
  ) {
    throw new BrokerError('not_found', 'no such task');
  }
  return task;
}

function sameJob(task: StoredTask, identity: Identity, config: Pick<Config, 'issuers'>): boolean {
  if (!task.jobKey) return true;
  const issuer = config.issuers.find((candidate) => candidate.name === identity.issuer);
  return (
    Boolean(issuer) && jobKeyOf(identity, jobClaimsOf(issuer as NonNullable<typeof issuer>)) === task.jobKey
  );
}
