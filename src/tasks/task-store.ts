import type { Redis } from 'ioredis';
import type { Task, TaskOutcome } from '../domain/types';
import type { RedisKeys } from '../leases/keys';
import { luaScript } from '../leases/lua-script';

/** Closes an open task once. KEYS: task   ARGV: outcome, summary, nowMs */
const COMPLETE_TASK = luaScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state ~= 'open' then return 'already' end
redis.call('HSET', KEYS[1], 'state', 'completed', 'outcome', ARGV[1], 'summary', ARGV[2], 'completedAtMs', ARGV[3])
return 'completed'`);

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
  };
};

export type TaskStore = ReturnType<typeof createTaskStore>;

export function createTaskStore(redis: Redis, keys: RedisKeys, options: { retentionSeconds: number }) {
  return {
    async create(task: Task): Promise<void> {
      const key = keys.task(task.id);
      const expireAtSeconds = Math.ceil(task.expiresAtMs / 1000) + options.retentionSeconds;
      await redis
        .multi()
        .hset(key, {
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
        })
        .expireat(key, expireAtSeconds)
        .exec();
    },

    async get(taskId: string, nowMs: number): Promise<StoredTask | null> {
      return parse(await redis.hgetall(keys.task(taskId)), nowMs);
    },

    async complete(taskId: string, outcome: TaskOutcome, summary: string, nowMs: number) {
      return (await COMPLETE_TASK(redis, [keys.task(taskId)], [outcome, summary, nowMs])) as
        'completed' | 'already' | 'missing';
    },

    leaseIds: (taskId: string) => redis.smembers(keys.taskLeases(taskId)),
  };
}
