import type { Redis } from 'ioredis';
import { identityKey, type Lease, type LeaseState } from '../domain/types';
import type { RedisKeys } from './keys';
import { luaScript } from './lua-script';
import { hashFields } from './redis';

/**
 * Writes a lease, its three indexes, its due-index entry and the task's active count in one atomic step,
 * only if the task is still open, the lease cap is not reached and the lease does not exist yet — and, in the
 * same step, the audit entry that records it (so a lease never exists without its `credential.issued`).
 * Quotas (0 = none): unsettled leases in total, per task, per identity.
 * A step-up approval, when one is presented, is used up in the same step: it must still be approved and
 * unexpired, so two calls racing with one approval get one lease between them.
 * KEYS: lease, task, taskLeases, identityLeases, grantLeases, due, audit, identityActive[, approval, approvalsDue]
 * ARGV: cap, nowMs, expiresAtMs, id, auditEntry, identityCap, taskCap, approvalId ('' = none), fields...
 */
const CREATE_LEASE = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if redis.call('HGET', KEYS[2], 'state') ~= 'open' then return 'task_not_open' end
if tonumber(redis.call('HGET', KEYS[2], 'expiresAtMs')) <= tonumber(ARGV[2]) then return 'task_not_open' end
if redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[1]) then return 'cap' end
local taskCap = tonumber(ARGV[7])
if taskCap > 0 and tonumber(redis.call('HGET', KEYS[2], 'activeLeases') or '0') >= taskCap then return 'task_cap' end
local identityCap = tonumber(ARGV[6])
if identityCap > 0 and redis.call('SCARD', KEYS[8]) >= identityCap then return 'identity_cap' end
if ARGV[8] ~= '' then
  local a = redis.call('HMGET', KEYS[9], 'status', 'expiresAtMs')
  if a[1] ~= 'approved' then return 'approval_' .. (a[1] or 'missing') end
  if tonumber(a[2]) <= tonumber(ARGV[2]) then return 'approval_expired' end
  redis.call('HSET', KEYS[9], 'status', 'used', 'usedAtMs', ARGV[2], 'leaseId', ARGV[4])
  redis.call('ZREM', KEYS[10], ARGV[8])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('SADD', KEYS[3], ARGV[4])
local taskTtl = redis.call('PTTL', KEYS[2])
if taskTtl > 0 then redis.call('PEXPIRE', KEYS[3], taskTtl) end
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[2], 'activeLeases', 1)
redis.call('SADD', KEYS[8], ARGV[4])
redis.call('XADD', KEYS[7], '*', 'event', ARGV[5])
return 'ok'`);

/**
 * Settles a lease (revoked or expired) once: state, what revocation did, out of the due and irrevocable
 * indexes, into the settled index (purged after the retention period), the task's active count down.
 * KEYS: lease, due, irrevocable, task, settled, identityUnsettled
 * ARGV: id, state, revocation, nowMs, reason, revocationDetail
 */
const SETTLE_LEASE = luaScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'revoked' or state == 'expired' or state == 'force-closed' then return 'already' end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'revocation', ARGV[3], 'revokedAtMs', ARGV[4])
if ARGV[5] ~= '' and not redis.call('HGET', KEYS[1], 'revokeReason') then
  redis.call('HSET', KEYS[1], 'revokeReason', ARGV[5])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'revocationDetail', ARGV[6]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HINCRBY', KEYS[4], 'activeLeases', -1) end
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
return 'settled'`);

/**
 * Deletes settled leases older than the retention cut-off, with their index entries.
 * KEYS: settled   ARGV: cutoffMs, limit, keyPrefix
 */
const PURGE_SETTLED = luaScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local p = ARGV[3]
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', p .. 'lease:' .. id, 'taskId', 'issuer', 'subject', 'grant')
  if f[1] then
    redis.call('SREM', p .. 'task-leases:' .. f[1], id)
    redis.call('SREM', p .. 'identity-leases:' .. f[2] .. '/' .. f[3], id)
    redis.call('SREM', p .. 'grant-leases:' .. f[4], id)
  end
  redis.call('DEL', p .. 'lease:' .. id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids`);

/**
 * Moves an active (or irrevocable) lease to revoking and makes it due now, so the sweeper re-queues it if
 * the revocation job is lost. Answers 'started', or the state that prevented it.
 * With `force` ('1'), the lease (also one already revoking) is marked so the worker force-closes it if the
 * backend refuses.
 * KEYS: lease, due   ARGV: id, nowMs, reason, force
 */
const MARK_REVOKING = luaScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if ARGV[4] == '1' and (state == 'active' or state == 'irrevocable' or state == 'revoking') then
  redis.call('HSET', KEYS[1], 'forced', '1')
end
if state == 'revoking' and ARGV[4] == '1' then return 'forced' end
if state ~= 'active' and state ~= 'irrevocable' then return state end
redis.call('HSET', KEYS[1], 'state', 'revoking', 'revokeReason', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'started'`);

/**
 * Answers 'became' when the lease was not irrevocable before (on-call hears of it once), 'still' when it
 * was, 'settled' when it settled meanwhile.
 * KEYS: lease, due, irrevocable   ARGV: id, nowMs, retryAtMs, error
 */
const MARK_IRREVOCABLE = luaScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'revoked' or state == 'expired' or state == 'force-closed' then return 'settled' end
redis.call('HSET', KEYS[1], 'state', 'irrevocable', 'lastError', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
if state == 'irrevocable' then return 'still' end
return 'became'`);

/**
 * An on-call "retry now" of an irrevocable lease: it stays irrevocable (its reason and actor untouched, and a
 * retry that fails again does not page again) and becomes due now, so the sweeper re-queues its job if the
 * one queued with this call is lost. Answers 'retrying', or the state that prevented it.
 * KEYS: lease, due   ARGV: id, nowMs
 */
const MARK_RETRY = luaScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state ~= 'irrevocable' then return state end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'retrying'`);

export type CreateLeaseResult =
  | 'ok'
  | 'exists'
  | 'task_not_open'
  | 'cap'
  | 'task_cap'
  | 'identity_cap'
  /** The presented approval was no longer approved (used meanwhile, expired...): nothing was written. */
  | `approval_${string}`;

const serialise = (lease: Lease): string[] => {
  const fields: Record<string, string | number | undefined> = {
    id: lease.id,
    taskId: lease.taskId,
    grant: lease.grant,
    provider: lease.provider,
    issuer: lease.issuer,
    subject: lease.subject,
    state: lease.state,
    createdAtMs: lease.createdAtMs,
    expiresAtMs: lease.expiresAtMs,
    handle: JSON.stringify(lease.handle),
    credentialSha256: lease.credentialSha256,
    attempts: lease.attempts,
  };
  return hashFields(fields);
};

const parse = (hash: Record<string, string>): Lease | null => {
  if (!hash.id) return null;
  return {
    id: hash.id,
    taskId: hash.taskId ?? '',
    grant: hash.grant ?? '',
    provider: hash.provider as Lease['provider'],
    issuer: hash.issuer ?? '',
    subject: hash.subject ?? '',
    state: hash.state as LeaseState,
    createdAtMs: Number(hash.createdAtMs),
    expiresAtMs: Number(hash.expiresAtMs),
    handle: JSON.parse(hash.handle ?? '{}') as Record<string, string>,
    credentialSha256: hash.credentialSha256 ?? '',
    revocation: hash.revocation,
    revocationDetail: hash.revocationDetail,
    revokedAtMs: hash.revokedAtMs ? Number(hash.revokedAtMs) : undefined,
    revokeReason: hash.revokeReason,
    attempts: Number(hash.attempts ?? 0),
    lastError: hash.lastError,
    ...(hash.forced === '1' ? { forced: true } : {}),
  };
};

export interface LeaseSelector {
  task?: string;
  /** `issuer/subject` (see identityKey). */
  identity?: string;
  grant?: string;
  /** Without task, identity or grant: settled leases (revoked, expired; kept for the retention period) instead of unsettled ones. */
  settled?: boolean;
}

export type LeaseStore = ReturnType<typeof createLeaseStore>;

export function createLeaseStore(redis: Redis, keys: RedisKeys, options: { retentionSeconds: number }) {
  const run = async (script: ReturnType<typeof luaScript>, keyList: string[], args: (string | number)[]) =>
    (await script(redis, keyList, args)) as string;

  return {
    /** `auditEntry`: the serialised audit event appended with the lease (see audit/audit-log.ts). */
    async create(
      lease: Lease,
      options: {
        maxActiveLeases: number;
        maxActiveLeasesPerIdentity?: number;
        maxActiveLeasesPerTask?: number;
        nowMs: number;
        auditEntry: string;
        /** A step-up approval to use up with this lease. */
        approvalId?: string;
      },
    ): Promise<CreateLeaseResult> {
      const keyList = [
        keys.lease(lease.id),
        keys.task(lease.taskId),
        keys.taskLeases(lease.taskId),
        keys.identityLeases(identityKey(lease.issuer, lease.subject)),
        keys.grantLeases(lease.grant),
        keys.due(),
        keys.audit(),
        keys.identityUnsettled(identityKey(lease.issuer, lease.subject)),
      ];
      if (options.approvalId) keyList.push(keys.approval(options.approvalId), keys.approvalsDue());
      const { maxActiveLeases, nowMs, auditEntry } = options;
      const args = [
        maxActiveLeases,
        nowMs,
        lease.expiresAtMs,
        lease.id,
        auditEntry,
        options.maxActiveLeasesPerIdentity ?? 0,
        options.maxActiveLeasesPerTask ?? 0,
        options.approvalId ?? '',
        ...serialise(lease),
      ];
      return (await run(CREATE_LEASE, keyList, args)) as CreateLeaseResult;
    },

    /**
     * A cheap look before minting, so an identity at its quota does not make the backend mint credentials
     * that are then thrown away. CREATE_LEASE checks again, atomically: this one only saves work.
     */
    async quotaReached(
      lease: Pick<Lease, 'taskId' | 'issuer' | 'subject'>,
      caps: { perIdentity?: number; perTask?: number },
    ): Promise<'identity_cap' | 'task_cap' | null> {
      if (!caps.perIdentity && !caps.perTask) return null;
      const [identityCount, taskCount] = await Promise.all([
        caps.perIdentity ? redis.scard(keys.identityUnsettled(identityKey(lease.issuer, lease.subject))) : 0,
        caps.perTask ? redis.hget(keys.task(lease.taskId), 'activeLeases') : '0',
      ]);
      if (caps.perTask && Number(taskCount ?? 0) >= caps.perTask) return 'task_cap';
      if (caps.perIdentity && identityCount >= caps.perIdentity) return 'identity_cap';
      return null;
    },

    async get(leaseId: string): Promise<Lease | null> {
      return parse(await redis.hgetall(keys.lease(leaseId)));
    },

    async getMany(leaseIds: readonly string[]): Promise<Lease[]> {
      if (leaseIds.length === 0) return [];
      const pipeline = redis.pipeline();
      for (const id of leaseIds) pipeline.hgetall(keys.lease(id));
      const replies = (await pipeline.exec()) ?? [];
      return replies.flatMap(([error, hash]) => {
        if (error) throw error;
        const lease = parse(hash as Record<string, string>);
        return lease ? [lease] : [];
      });
    },

    /** Lease ids matching a selector (the narrowest index), or without one every unsettled (or settled) lease. */
    async selectIds(selector: LeaseSelector): Promise<string[]> {
      const sets = [
        selector.task && keys.taskLeases(selector.task),
        selector.identity && keys.identityLeases(selector.identity),
        selector.grant && keys.grantLeases(selector.grant),
      ].filter((key): key is string => Boolean(key));
      if (sets.length === 0) return redis.zrange(selector.settled ? keys.settled() : keys.due(), 0, -1);
      return sets.length === 1 ? redis.smembers(sets[0] as string) : redis.sinter(...sets);
    },

    async markRevoking(leaseId: string, reason: string, nowMs: number, force = false): Promise<string> {
      return run(
        MARK_REVOKING,
        [keys.lease(leaseId), keys.due()],
        [leaseId, nowMs, reason, force ? '1' : '0'],
      );
    },

    markRetry: (leaseId: string, nowMs: number) =>
      run(MARK_RETRY, [keys.lease(leaseId), keys.due()], [leaseId, nowMs]),

    async settle(
      lease: Pick<Lease, 'id' | 'taskId' | 'issuer' | 'subject'>,
      outcome: {
        state: 'revoked' | 'expired' | 'force-closed';
        revocation: string;
        detail?: string;
        reason?: string;
      },
      nowMs: number,
    ) {
      const leaseId = lease.id;
      const keyList = [
        keys.lease(leaseId),
        keys.due(),
        keys.irrevocable(),
        keys.task(lease.taskId),
        keys.settled(),
        keys.identityUnsettled(identityKey(lease.issuer, lease.subject)),
      ];
      const { state, revocation, reason = '', detail = '' } = outcome;
      return run(SETTLE_LEASE, keyList, [leaseId, state, revocation, nowMs, reason, detail]);
    },

    /** Drops settled leases past the retention period; returns how many went. */
    async purgeSettled(nowMs: number, limit: number): Promise<number> {
      const cutoffMs = nowMs - options.retentionSeconds * 1000;
      return Number(await PURGE_SETTLED(redis, [keys.settled()], [cutoffMs, limit, keys.prefix]));
    },

    async recordFailure(leaseId: string, error: string): Promise<void> {
      await redis
        .multi()
        .hset(keys.lease(leaseId), 'lastError', error)
        .hincrby(keys.lease(leaseId), 'attempts', 1)
        .exec();
    },

    async markIrrevocable(leaseId: string, error: string, nowMs: number, retryAtMs: number): Promise<string> {
      return run(
        MARK_IRREVOCABLE,
        [keys.lease(leaseId), keys.due(), keys.irrevocable()],
        [leaseId, nowMs, retryAtMs, error],
      );
    },

    /** Unsettled leases the sweeper must act on: due at or before `untilMs`. */
    dueIds(untilMs: number, limit: number, offset = 0): Promise<string[]> {
      return redis.zrangebyscore(keys.due(), '-inf', untilMs, 'LIMIT', offset, limit);
    },

    /** A due entry whose lease record is gone (never expected): drop it so the sweeper does not spin on it. */
    forgetDue: (leaseId: string) => redis.zrem(keys.due(), leaseId),

    countUnsettled: () => redis.zcard(keys.due()),
    countIrrevocable: () => redis.zcard(keys.irrevocable()),
    /** Every irrevocable lease, the oldest first (by when it became irrevocable). */
    irrevocableIds: () => redis.zrange(keys.irrevocable(), 0, -1),
  };
}
