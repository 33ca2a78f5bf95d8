import { BrokerError } from '../domain/errors';
import type { Identity } from '../domain/types';
import type { StoredTask, TaskStore } from '../tasks/task-store';

/**
 * A task is visible only to the identity that declared it. Someone else's task answers not_found, the same
 * as a task that does not exist, so task ids cannot be probed.
 */
export async function loadOwnTask(
  tasks: TaskStore,
  identity: Identity,
  taskId: string,
  nowMs: number,
): Promise<StoredTask> {
  const task = await tasks.get(taskId, nowMs);
  if (!task || task.issuer !== identity.issuer || task.subject !== identity.subject) {
    throw new BrokerError('not_found', 'no such task');
  }
  return task;
}
