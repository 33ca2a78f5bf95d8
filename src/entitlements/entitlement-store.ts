import { approvalFields } from '../approvals/approval-store';
import type { Approval } from '../approvals/approval';
import type { RedisClient } from '../redis/connection';
import { hashFields } from '../redis/hash-fields';
import type { RedisKeys } from '../redis/keys';
import { runScript, type ScriptName } from '../redis/scripts';
import type { Enrolment, Entitlement } from './records';

/** Listings answer at most this many records: an inventory for people, not an archive (the audit log is). */
export const MAX_LISTED_RECORDS = 5000;
/** Issuance considers at most this many unexpired entitlements of one grant (the longest-lived first). */
const MAX_CANDIDATES = 1000;

const optionalNumber = (value: string | undefined) => (value ? Number(value) : undefined);

function parseEnrolment(hash: Record<string, string>): Enrolment | null {
  if (!hash.id || !hash.issuer) return null;
  return {
    id: hash.id,
    issuer: hash.issuer,
    subjectPattern: hash.subjectPattern ?? '',
    owner: hash.owner ?? '',
    purpose: hash.purpose ?? '',
    expiresAtMs: Number(hash.expiresAtMs),
    approvalId: hash.approvalId ?? '',
    createdBy: hash.createdBy ?? '',
    createdAtMs: Number(hash.createdAtMs),
    revokedAtMs: optionalNumber(hash.revokedAtMs),
    revokedBy: hash.revokedBy,
    revokeReason: hash.revokeReason,
  };
}

function parseEntitlement(hash: Record<string, string>): Entitlement | null {
  const base = parseEnrolment(hash);
  if (!base || !hash.grant || !hash.enrolmentId) return null;
  return {
    ...base,
    enrolmentId: hash.enrolmentId,
    grant: hash.grant,
    recertifiedAtMs: optionalNumber(hash.recertifiedAtMs),
    recertifiedBy: hash.recertifiedBy,
    recertifyReason: hash.recertifyReason,
  };
}

export type EntitlementStore = ReturnType<typeof createEntitlementStore>;

/**
 * Enrolments and entitlements in Redis; their status is derived from their approvals (records.ts). A
 * proposal writes the record, its approval and the audit event in one step (proposeRecord-var.lua), like a
 * step-up request (createApproval-var.lua).
 */
export function createEntitlementStore(
  redis: RedisClient,
  keys: RedisKeys,
  options: { retentionSeconds: number },
) {
  const run = async (name: ScriptName, keyList: string[], args: (string | number)[]) =>
    String(await runScript(redis, name, keyList, args));
  const keyExpireAtMs = (expiresAtMs: number) => expiresAtMs + options.retentionSeconds * 1000;

  async function readMany<T>(
    keyOf: (id: string) => string,
    ids: readonly string[],
    parse: (hash: Record<string, string>) => T | null,
  ): Promise<T[]> {
    if (ids.length === 0) return [];
    const pipeline = redis.pipeline();
    for (const id of ids) pipeline.hgetall(keyOf(id));
    const replies = (await pipeline.exec()) ?? [];
    return replies.flatMap(([error, hash]) => {
      const record = error ? null : parse(hash as Record<string, string>);
      return record ? [record] : [];
    });
  }
  const enrolments = (ids: readonly string[]) => readMany(keys.enrolment, ids, parseEnrolment);
  const entitlements = (ids: readonly string[]) => readMany(keys.entitlement, ids, parseEntitlement);

  async function propose(
    record: Enrolment | Entitlement,
    recordKeys: string[],
    approval: Approval,
    auditEntry: string,
  ) {
    const fields = hashFields(record);
    const keyList = [
      recordKeys[0] as string,
      keys.approval(approval.id),
      keys.approvals(),
      keys.approvalsDue(),
      keys.audit(),
      ...recordKeys.slice(1),
    ];
    const args = [
      // The approval matters as long as the record can: both stay readable a retention period after.
      keyExpireAtMs(Math.max(record.expiresAtMs, approval.expiresAtMs)),
      approval.createdAtMs,
      approval.expiresAtMs,
      approval.id,
      record.id,
      auditEntry,
      record.expiresAtMs,
      fields.length,
      ...fields,
      ...approvalFields(approval),
    ];
    if ((await run('proposeRecord', keyList, args)) !== 'ok') throw new Error(`record ${record.id} exists`);
  }

  return {
    proposeEnrolment: (enrolment: Enrolment, approval: Approval, auditEntry: string) =>
      propose(enrolment, [keys.enrolment(enrolment.id), keys.enrolments()], approval, auditEntry),

    proposeEntitlement: (entitlement: Entitlement, approval: Approval, auditEntry: string) =>
      propose(
        entitlement,
        [keys.entitlement(entitlement.id), keys.entitlements(), keys.grantEntitlements(entitlement.grant)],
        approval,
        auditEntry,
      ),

    getEnrolment: async (id: string) => (await enrolments([id]))[0] ?? null,
    getEntitlement: async (id: string) => (await entitlements([id]))[0] ?? null,
    enrolments,

    /** Enrolments by expiry, soonest first (expired ones stay listed for the retention period). */
    listEnrolments: async () => enrolments(await redis.zrange(keys.enrolments(), 0, MAX_LISTED_RECORDS - 1)),

    /** Entitlements by expiry, soonest first; `untilMs` keeps only those expiring by then. */
    listEntitlements: async (untilMs?: number) =>
      entitlements(
        await redis.zrangebyscore(
          keys.entitlements(),
          '-inf',
          untilMs ?? '+inf',
          'LIMIT',
          0,
          MAX_LISTED_RECORDS,
        ),
      ),

    /** A grant's entitlements not yet expired as of `nowMs`: what issuance chooses from. */
    unexpiredForGrant: async (grant: string, nowMs: number) =>
      entitlements(
        await redis.zrevrangebyscore(
          keys.grantEntitlements(grant),
          '+inf',
          `(${nowMs}`,
          'LIMIT',
          0,
          MAX_CANDIDATES,
        ),
      ),

    /** 'ok', 'missing' or 'revoked' (already). */
    revoke(
      kind: 'enrolment' | 'entitlement',
      id: string,
      by: string,
      atMs: number,
      reason: string,
      auditEntry: string,
    ) {
      const key = kind === 'enrolment' ? keys.enrolment(id) : keys.entitlement(id);
      return run('revokeRecord', [key, keys.audit()], [atMs, by, reason, auditEntry]);
    },

    /** 'ok', 'missing', 'revoked' or 'expired'. */
    recertify(
      entitlement: Pick<Entitlement, 'id' | 'grant' | 'approvalId'>,
      change: { nowMs: number; expiresAtMs: number; by: string; reason: string },
      auditEntry: string,
    ) {
      return run(
        'recertifyEntitlement',
        [
          keys.entitlement(entitlement.id),
          keys.entitlements(),
          keys.grantEntitlements(entitlement.grant),
          keys.approval(entitlement.approvalId),
          keys.audit(),
        ],
        [
          change.nowMs,
          change.expiresAtMs,
          change.by,
          change.reason,
          keyExpireAtMs(change.expiresAtMs),
          auditEntry,
          entitlement.id,
        ],
      );
    },

    /** Index entries of records expired longer than the retention period (their hashes are gone by now). */
    async purgeIndexes(nowMs: number, grants: readonly string[]): Promise<void> {
      const cutoff = nowMs - options.retentionSeconds * 1000;
      const pipeline = redis.pipeline();
      pipeline.zremrangebyscore(keys.enrolments(), '-inf', cutoff);
      pipeline.zremrangebyscore(keys.entitlements(), '-inf', cutoff);
      for (const grant of grants) pipeline.zremrangebyscore(keys.grantEntitlements(grant), '-inf', cutoff);
      await pipeline.exec();
    },
  };
}
