import type { Task, TaskOutcome } from '../domain/types';
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

/** Tasks in Redis; completing one goes through `durable` (replicas confirm it; re-applied after a failover). */
export function createTaskStore(
  redis: RedisClient,
  keys: RedisKeys,
  durable: DurableWrites,
  options: { retentionSeconds: number },
) {
  const expireAtSeconds = (task: Task) => Math.ceil(task.expiresAtMs / 1000) + options.retentionSeconds;
  return {
    async create(task: Task): Promise<void> {
      const key = keys.task(task.id);
      await redis.multi().hset(key, fields(task)).expireat(key, expireAtSeconds(task)).exec();
    },

    /** For tasks with a deterministic id (a CI job's): the first of concurrent creators wins. */
    async createIfAbsent(task: Task): Promise<'created' | 'exists'> {
      const args = [expireAtSeconds(task), ...Object.entries(fields(task)).flat()];
      return (await runScript(redis, 'createTaskIfAbsent', [keys.task(task.id)], args)) as
        'created' | 'exists';
    },

    async get(taskId: string, nowMs: number): Promise<StoredTask | null> {
      return parse(await redis.hgetall(keys.task(taskId)), nowMs);
    },

    async complete(taskId: string, outcome: TaskOutcome, summary: string, nowMs: number) {
      // Confirmed with the revocations it starts (requestRevocation), in one WAIT.
      const args = [outcome, summary, nowMs];
      return (await durable.run('completeTask', [keys.task(taskId)], args, { confirm: false })) as
        'completed' | 'already' | 'missing';
    },

    leaseIds: (taskId: string) => redis.smembers(keys.taskLeases(taskId)),
  };
}
