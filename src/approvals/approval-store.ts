import type { RedisClient } from '../redis/connection';
import { hashFields } from '../redis/hash-fields';
import type { RedisKeys } from '../redis/keys';
import { runScript, type ScriptName } from '../redis/scripts';
import { type Approval, type ApprovalKind, type ApprovalStatus } from './approval';

/** How often a step-up request reads its task's requests again when one was added while it looked. */
const STALE_RETRIES = 5;

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

export function createApprovalStore(
  redis: RedisClient,
  keys: RedisKeys,
  options: { retentionSeconds: number },
) {
  const run = async (name: ScriptName, keyList: string[], args: (string | number)[]) =>
    String(await runScript(redis, name, keyList, args));

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
     * open one of its task that covers it instead, when there is one (createApproval-var.lua): its id, else null.
     */
    async create(approval: Approval, auditEntry: string, keepUntilMs: number): Promise<string | null> {
      const keyList = [keys.approval(approval.id), keys.approvals(), keys.approvalsDue(), keys.audit()];
      const keyExpireAtMs = keepUntilMs + options.retentionSeconds * 1000;
      const head = [
        approval.createdAtMs,
        approval.expiresAtMs,
        approval.id,
        auditEntry,
        keyExpireAtMs,
        approval.grant ?? '',
        approval.ttlSeconds ?? 0,
      ];
      for (let attempt = 0; attempt < STALE_RETRIES; attempt++) {
        // A step-up request looks through its task's requests (createApproval-var.lua): their keys go in KEYS.
        const others = approval.taskId ? await redis.smembers(keys.taskApprovals(approval.taskId)) : [];
        const taskKeys = approval.taskId
          ? [keys.taskApprovals(approval.taskId), ...others.map((id) => keys.approval(id))]
          : [];
        const args = [...head, others.length, ...others, ...approvalFields(approval)];
        const result = await run('createApproval', [...keyList, ...taskKeys], args);
        if (result === 'stale') continue;
        if (result.startsWith('open:')) return result.slice('open:'.length);
        if (result !== 'ok') throw new Error(`approval ${approval.id} already exists`);
        return null;
      }
      throw new Error(
        `the requests of task ${approval.taskId} kept changing while approval ${approval.id} was made`,
      );
    },

    async get(id: string): Promise<Approval | null> {
      return parse(await redis.hgetall(keys.approval(id)));
    },

    getMany,

    /** The newest approvals first, up to MAX_LISTED_APPROVALS, before any filtering. */
    async newest(): Promise<Approval[]> {
      return getMany(await redis.zrevrange(keys.approvals(), 0, MAX_LISTED_APPROVALS - 1));
    },

    /** See decideApproval-3.lua for the answers. `expiresAtMs`: a step-up approval's use-by time; omitted for the rest. */
    decide(
      id: string,
      decision: { status: 'approved' | 'denied'; by: string; atMs: number; reason: string },
      auditEntry: string,
      expiresAtMs?: number,
    ): Promise<string> {
      return run(
        'decideApproval',
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
      run('expireApproval', [keys.approval(id), keys.approvalsDue(), keys.audit()], [id, nowMs, auditEntry]),

    /** Index entries whose approval has outlived its retention (the hash itself expires by its own TTL). */
    async purgeIndex(nowMs: number, maxLifetimeMs: number): Promise<number> {
      const cutoff = nowMs - maxLifetimeMs - options.retentionSeconds * 1000;
      return redis.zremrangebyscore(keys.approvals(), '-inf', cutoff);
    },
  };
}
