import { identityKey, type Task, type TaskOutcome } from '../domain/types';
import type { RedisClient } from '../redis/connection';
import type { DurableWrites } from '../redis/durable-writes';
import type { RedisKeys } from '../redis/keys';
import { runScript } from '../redis/scripts';

export interface StoredTask extends Task {
  activeLeases: number;
}

const parse = (hash: Record<string, string>, nowMs: number): StoredTask | null => {
  if (!hash.id) return null;
  const expiresAtMs = Number(hash.expiresAtMs);
  const stored = hash.state as Task['state'];
  return {
    id: hash.id,
    issuer: hash.issuer ?? '',
    subject: hash.subject ?? '',
    kind: hash.kind as Task['kind'],
    purpose: hash.purpose ?? '',
    ticket: hash.ticket ?? '',
    ref: hash.ref ?? '',
    grants: JSON.parse(hash.grants ?? '[]') as string[],
    createdAtMs: Number(hash.createdAtMs),
    expiresAtMs,
    // An open task past its TTL is expired; nothing needs to write that down.
    state: stored === 'open' && expiresAtMs <= nowMs ? 'expired' : stored,
    outcome: hash.outcome as TaskOutcome | undefined,
    summary: hash.summary || undefined,
    completedAtMs: hash.completedAtMs ? Number(hash.completedAtMs) : undefined,
    activeLeases: Number(hash.activeLeases ?? 0),
    ...(hash.jobKey
      ? { jobKey: hash.jobKey, job: JSON.parse(hash.job ?? '{}') as Record<string, string> }
      : {}),
  };
};

const fields = (task: Task): Record<string, string | number> => ({
  id: task.id,
  issuer: task.issuer,
  subject: task.subject,
  kind: task.kind,
  purpose: task.purpose,
  ticket: task.ticket,
  ref: task.ref,
  grants: JSON.stringify(task.grants),
  createdAtMs: task.createdAtMs,
  expiresAtMs: task.expiresAtMs,
  state: 'open',
  activeLeases: 0,
  ...(task.jobKey ? { jobKey: task.jobKey, job: JSON.stringify(task.job ?? {}) } : {}),
});

export type TaskStore = ReturnType<typeof createTaskStore>;

/** Open tasks kept in each process for issuance (LRU); a task's declared facts never change. */
const ISSUE_CACHE_ENTRIES = 10_000;

/** What creating a task answered: `task_quota` when its identity already holds its quota of open tasks. */
export type CreateTaskResult = 'created' | 'exists' | 'task_quota';

/** Tasks in Redis; completing one goes through `durable` (replicas confirm it; re-applied after a failover). */
export function createTaskStore(
  redis: RedisClient,
  keys: RedisKeys,
  durable: DurableWrites,
  options: { retentionSeconds: number; maxOpenTasksPerIdentity: number },
) {
  const expireAtSeconds = (task: Task) => Math.ceil(task.expiresAtMs / 1000) + options.retentionSeconds;
  const openTasksOf = (owner: Pick<Task, 'issuer' | 'subject'>) =>
    keys.identityOpenTasks(identityKey(owner.issuer, owner.subject));
  // Open tasks as last read here, by id, the least recently used first.
  const openTasks = new Map<string, StoredTask>();
  const remember = (task: StoredTask) => {
    openTasks.delete(task.id);
    openTasks.set(task.id, task);
    if (openTasks.size > ISSUE_CACHE_ENTRIES) openTasks.delete(openTasks.keys().next().value as string);
  };
  const get = async (taskId: string, nowMs: number): Promise<StoredTask | null> =>
    parse(await redis.hgetall(keys.task(taskId)), nowMs);
  return {
    /**
     * Creates the task unless one with its id exists (a CI job's task has a deterministic id: the first of
     * concurrent creators wins), counted against its identity's open tasks in the same atomic step.
     */
    async create(task: Task, nowMs: number): Promise<CreateTaskResult> {
      const quota = options.maxOpenTasksPerIdentity;
      const head = [quota, nowMs, task.id, task.expiresAtMs, expireAtSeconds(task)];
      const args = [...head, ...Object.entries(fields(task)).flat()];
      const taskKeys = [keys.task(task.id), openTasksOf(task)];
      return (await runScript(redis, 'createTask', taskKeys, args)) as CreateTaskResult;
    },

    get,

    /**
     * For issuance: an open task from this process's cache until its expiry, else read (and, when open,
     * cached). What a task declared never changes; what does — completed elsewhere, its active leases —
     * is not taken from here: createLease refuses a lease for a task no longer open, atomically, so a task
     * completed through another replica answers 409 task_not_open all the same (the credential minted for
     * it revoked at once). `activeLeases` of a cached task is as it was read: a caller whose policies read
     * it asks with `live`.
     */
    async getForIssue(taskId: string, nowMs: number, options: { live: boolean }): Promise<StoredTask | null> {
      const cached = options.live ? undefined : openTasks.get(taskId);
      if (cached && cached.expiresAtMs > nowMs) return cached;
      if (cached) openTasks.delete(taskId);
      const task = await get(taskId, nowMs);
      if (task?.state === 'open') remember(task);
      return task;
    },

    async complete(taskId: string, outcome: TaskOutcome, summary: string, nowMs: number) {
      openTasks.delete(taskId);
      // The owner names the open-tasks key; it never changes once the task exists (missing: no key matters).
      const [issuer, subject] = await redis.hmget(keys.task(taskId), 'issuer', 'subject');
      const owner = { issuer: issuer ?? '', subject: subject ?? '' };
      // Confirmed with the revocations it starts (requestRevocation), in one WAIT.
      const args = [outcome, summary, nowMs, taskId];
      const taskKeys = [keys.task(taskId), openTasksOf(owner)];
      return (await durable.run('completeTask', taskKeys, args, { confirm: false })) as
        'completed' | 'already' | 'missing';
    },

    leaseIds: (taskId: string) => redis.smembers(keys.taskLeases(taskId)),
  };
}
