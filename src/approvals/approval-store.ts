import type { Redis } from 'ioredis';
import type { RedisKeys } from '../leases/keys';
import { luaScript } from '../leases/lua-script';
import { hashFields } from '../leases/redis';
import { type Approval, type ApprovalKind, type ApprovalStatus } from './approval';

/**
 * Writes an approval request, its index entries and its `approval.requested` audit event in one step, so
 * no request exists that the audit log does not show. A step-up request first looks for an open one of its
 * task that covers it (same grant, at least this TTL, pending or approved and not past its deadline) and
 * answers `open:<id>` instead, so calls racing to ask open one request between them. (The task's approval
 * keys are named from their prefix here, as PURGE_SETTLED does: the set only holds their ids.)
 * KEYS: approval, index, due, audit, taskApprovals (step-up only)
 * ARGV: createdAtMs, expiresAtMs, id, auditEntry, keyExpireAtMs, approvalKeyPrefix, grant, ttlSeconds,
 *       fields...
 */
const CREATE_APPROVAL = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if #KEYS >= 5 then
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local o = redis.call('HMGET', ARGV[6] .. other, 'status', 'expiresAtMs', 'grant', 'ttlSeconds')
    if (o[1] == 'pending' or o[1] == 'approved') and tonumber(o[2]) > tonumber(ARGV[1])
      and o[3] == ARGV[7] and tonumber(o[4]) >= tonumber(ARGV[8]) then
      return 'open:' .. other
    end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
if #KEYS >= 5 then
  redis.call('SADD', KEYS[5], ARGV[3])
  redis.call('PEXPIREAT', KEYS[5], ARGV[5])
end
redis.call('XADD', KEYS[4], '*', 'event', ARGV[4])
return 'ok'`);

/**
 * Decides a pending approval once, with its audit event. Separation of duties is checked here too, inside
 * the same atomic step as the write: the approver is never the requester.
 * KEYS: approval, due, audit
 * ARGV: status (approved|denied), by, atMs, reason, expiresAtMs after the decision ('' = leaves the due
 *       index), auditEntry
 * Answers 'ok', 'missing', 'self', 'expired', or the status that prevented it.
 */
const DECIDE = luaScript(`
local a = redis.call('HMGET', KEYS[1], 'status', 'expiresAtMs', 'requesterIssuer', 'requesterSubject', 'id')
if not a[1] then return 'missing' end
if a[3] .. '/' .. a[4] == ARGV[2] then return 'self' end
if a[1] ~= 'pending' then return a[1] end
if tonumber(a[2]) <= tonumber(ARGV[3]) then return 'expired' end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'decidedBy', ARGV[2], 'decidedAtMs', ARGV[3], 'decisionReason', ARGV[4])
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[2], a[5])
else
  redis.call('HSET', KEYS[1], 'expiresAtMs', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[5], a[5])
end
redis.call('XADD', KEYS[3], '*', 'event', ARGV[6])
return 'ok'`);

/**
 * Writes down an expiry that has already happened (pending past its deadline, or an approved step-up not
 * used in time), with its `approval.expired` audit event; anything else just leaves the due index.
 * KEYS: approval, due, audit   ARGV: id, nowMs, auditEntry
 */
const EXPIRE = luaScript(`
local a = redis.call('HMGET', KEYS[1], 'status', 'expiresAtMs', 'kind')
if not a[1] then redis.call('ZREM', KEYS[2], ARGV[1]) return 'missing' end
local lapses = a[1] == 'pending' or (a[1] == 'approved' and a[3] == 'step-up')
if not lapses then redis.call('ZREM', KEYS[2], ARGV[1]) return a[1] end
if tonumber(a[2]) > tonumber(ARGV[2]) then return 'not-due' end
redis.call('HSET', KEYS[1], 'status', 'expired')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'event', ARGV[3])
return 'expired'`);

/** An approval as hash fields (also written by the entitlement store, with the record it approves). */
export const approvalFields = (approval: Approval): string[] => {
  const record: Record<string, string | number | undefined> = {
    id: approval.id,
    kind: approval.kind,
    status: approval.status,
    createdAtMs: approval.createdAtMs,
    expiresAtMs: approval.expiresAtMs,
    requesterIssuer: approval.requester.issuer,
    requesterSubject: approval.requester.subject,
    reason: approval.reason,
    taskId: approval.taskId,
    grant: approval.grant,
    ttlSeconds: approval.ttlSeconds,
    target: approval.target,
    summary: approval.summary,
  };
  return hashFields(record);
};

const optionalNumber = (value: string | undefined) => (value ? Number(value) : undefined);

function parse(hash: Record<string, string>): Approval | null {
  if (!hash.id) return null;
  return {
    id: hash.id,
    kind: hash.kind as ApprovalKind,
    status: hash.status as ApprovalStatus,
    createdAtMs: Number(hash.createdAtMs),
    expiresAtMs: Number(hash.expiresAtMs),
    requester: { issuer: hash.requesterIssuer ?? '', subject: hash.requesterSubject ?? '' },
    reason: hash.reason,
    taskId: hash.taskId,
    grant: hash.grant,
    ttlSeconds: optionalNumber(hash.ttlSeconds),
    target: hash.target,
    summary: hash.summary ?? '',
    decision: hash.decidedBy
      ? { by: hash.decidedBy, atMs: Number(hash.decidedAtMs), reason: hash.decisionReason ?? '' }
      : undefined,
    usedAtMs: optionalNumber(hash.usedAtMs),
    leaseId: hash.leaseId,
  };
}

/** Reads answer at most this many of the newest approvals: an inbox, not an archive (the audit log is). */
export const MAX_LISTED_APPROVALS = 5000;

export type ApprovalStore = ReturnType<typeof createApprovalStore>;

export function createApprovalStore(redis: Redis, keys: RedisKeys, options: { retentionSeconds: number }) {
  const run = async (script: ReturnType<typeof luaScript>, keyList: string[], args: (string | number)[]) =>
    (await script(redis, keyList, args)) as string;

  const getMany = async (ids: readonly string[]): Promise<Approval[]> => {
    if (ids.length === 0) return [];
    const pipeline = redis.pipeline();
    for (const id of ids) pipeline.hgetall(keys.approval(id));
    const replies = (await pipeline.exec()) ?? [];
    return replies.flatMap(([error, hash]) => {
      const approval = error ? null : parse(hash as Record<string, string>);
      return approval ? [approval] : [];
    });
  };

  return {
    /**
     * `keepUntilMs`: the latest moment the approval can still matter (its deadline, plus the window to use
     * it); the record stays readable for the retention period after that. A step-up request answers the
     * open one of its task that covers it instead, when there is one (CREATE_APPROVAL): its id, else null.
     */
    async create(approval: Approval, auditEntry: string, keepUntilMs: number): Promise<string | null> {
      const keyList = [keys.approval(approval.id), keys.approvals(), keys.approvalsDue(), keys.audit()];
      if (approval.taskId) keyList.push(keys.taskApprovals(approval.taskId));
      const keyExpireAtMs = keepUntilMs + options.retentionSeconds * 1000;
      const args = [
        approval.createdAtMs,
        approval.expiresAtMs,
        approval.id,
        auditEntry,
        keyExpireAtMs,
        keys.approval(''),
        approval.grant ?? '',
        approval.ttlSeconds ?? 0,
        ...approvalFields(approval),
      ];
      const result = await run(CREATE_APPROVAL, keyList, args);
      if (result.startsWith('open:')) return result.slice('open:'.length);
      if (result !== 'ok') throw new Error(`approval ${approval.id} already exists`);
      return null;
    },

    async get(id: string): Promise<Approval | null> {
      return parse(await redis.hgetall(keys.approval(id)));
    },

    getMany,

    /** The newest approvals first, up to MAX_LISTED_APPROVALS, before any filtering. */
    async newest(): Promise<Approval[]> {
      return getMany(await redis.zrevrange(keys.approvals(), 0, MAX_LISTED_APPROVALS - 1));
    },

    /** See DECIDE for the answers. `expiresAtMs`: a step-up approval's use-by time; omitted for the rest. */
    decide(
      id: string,
      decision: { status: 'approved' | 'denied'; by: string; atMs: number; reason: string },
      auditEntry: string,
      expiresAtMs?: number,
    ): Promise<string> {
      return run(
        DECIDE,
        [keys.approval(id), keys.approvalsDue(), keys.audit()],
        [
          decision.status,
          decision.by,
          decision.atMs,
          decision.reason,
          expiresAtMs === undefined ? '' : expiresAtMs,
          auditEntry,
        ],
      );
    },

    /** Approvals whose deadline has passed (the sweeper writes their expiry). */
    dueIds: (nowMs: number, limit: number) =>
      redis.zrangebyscore(keys.approvalsDue(), '-inf', nowMs, 'LIMIT', 0, limit),

    expire: (id: string, nowMs: number, auditEntry: string) =>
      run(EXPIRE, [keys.approval(id), keys.approvalsDue(), keys.audit()], [id, nowMs, auditEntry]),

    /** Index entries whose approval has outlived its retention (the hash itself expires by its own TTL). */
    async purgeIndex(nowMs: number, maxLifetimeMs: number): Promise<number> {
      const cutoff = nowMs - maxLifetimeMs - options.retentionSeconds * 1000;
      return redis.zremrangebyscore(keys.approvals(), '-inf', cutoff);
    },
  };
}
