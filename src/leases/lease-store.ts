import { serializeAuditEvent, type AuditEvent, type AuditType } from '../audit/audit-log';
import { identityKey, type Lease, type LeaseState } from '../domain/types';
import type { RedisClient } from '../redis/connection';
import type { DurableWrites } from '../redis/durable-writes';
import { hashFields } from '../redis/hash-fields';
import type { RedisKeys } from '../redis/keys';
import { queueScript } from '../redis/scripts';

/** The answers of createLease (src/redis/scripts/createLease-10.lua). */
export type CreateLeaseResult =
  | 'ok'
  | 'exists'
  | 'task_not_open'
  | 'cap'
  | 'task_cap'
  | 'identity_cap'
  /** The presented approval was no longer approved (used meanwhile, expired...): nothing was written. */
  | 'approval_used'
  | 'approval_expired'
  | 'approval_pending'
  | 'approval_denied'
  | 'approval_missing';

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
    // Only what is not known otherwise: a JWT's handle is its lease id, attempts start at 0 (bytes per lease).
    handle: Object.keys(lease.handle).length > 0 ? JSON.stringify(lease.handle) : undefined,
    credentialSha256: lease.credentialSha256,
    attempts: lease.attempts > 0 ? lease.attempts : undefined,
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

/**
 * The audit event a lease transition writes in its own script, atomically with it (never appended after:
 * a crash in between would leave a lease revoking or settled with no record of why).
 */
export type LeaseAuditEvent<Type extends AuditType> = AuditEvent & { type: Type };

export interface LeaseSelector {
  task?: string;
  /** `issuer/subject` (see identityKey). */
  identity?: string;
  grant?: string;
  /** Without task, identity or grant: settled leases (revoked, expired; kept for the retention period) instead of unsettled ones. */
  settled?: boolean;
}

export type LeaseStore = ReturnType<typeof createLeaseStore>;

/**
 * Leases in Redis. Every write that decides a lease's fate (created, revocation requested, retry requested,
 * irrevocable, settled) is a script that goes through `durable`: confirmed by the replicas
 * `broker.replicaAcks` asks for, and kept to re-apply after a failover (src/redis/durable-writes.ts). Each
 * takes its audit event and appends it in the same atomic step, only when the transition happens: no lease
 * changes state without its audit entry, and a call repeated or replayed appends none twice.
 */
export function createLeaseStore(
  redis: RedisClient,
  keys: RedisKeys,
  durable: DurableWrites,
  options: { retentionSeconds: number },
) {
  const run = async (...call: Parameters<DurableWrites['run']>) => String(await durable.run(...call));
  /** The keys createLease and restoreLease take; without an approval its key is named but never touched. */
  const createKeys = (lease: Lease, approvalId: string | undefined) => [
    keys.lease(lease.id),
    keys.task(lease.taskId),
    keys.taskLeases(lease.taskId),
    keys.identityLeases(identityKey(lease.issuer, lease.subject)),
    keys.grantLeases(lease.grant),
    keys.due(),
    keys.audit(),
    keys.identityUnsettled(identityKey(lease.issuer, lease.subject)),
    keys.approval(approvalId ?? ''),
    keys.approvalsDue(),
  ];

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
      return (await run('createLease', createKeys(lease, options.approvalId), args)) as CreateLeaseResult;
    },

    /**
     * Writes back a lease Redis lost (restoreLease-10.lua, as the failover replay does; `exists`, and
     * nothing changed, when Redis has it): due at `dueAtMs`, and revoking already when `revokeReason` is
     * given; revoking and due now whatever was asked when its task is not open.
     */
    async restore(
      lease: Lease,
      options: { nowMs: number; dueAtMs: number; auditEntry: string; revokeReason?: string },
    ): Promise<'exists' | 'restored' | 'restored_revoking'> {
      const { revokeReason } = options;
      const fields = serialise(revokeReason ? { ...lease, state: 'revoking' } : lease);
      if (revokeReason) fields.push('revokeReason', revokeReason);
      // restoreLease takes createLease's arguments: no cap or quota is checked again, no approval used up.
      const args = [0, options.nowMs, options.dueAtMs, lease.id, options.auditEntry, 0, 0, '', ...fields];
      const result = await run('restoreLease', createKeys(lease, undefined), args);
      return result as 'exists' | 'restored' | 'restored_revoking';
    },

    /**
     * A cheap look before minting, so an identity at its quota does not make the backend mint credentials
     * that are then thrown away. createLease checks again, atomically: this one only saves work.
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

    /**
     * `started`, or `forced` (already revoking, newly marked for force), with its `lease.revoke_requested`
     * appended; otherwise the state that prevented it, and nothing appended. Unconfirmed: revocation requests
     * come in batches, confirmed once at the end (`confirmWrites`).
     */
    async markRevoking(
      leaseId: string,
      request: { reason: string; nowMs: number; force?: boolean },
      audit: LeaseAuditEvent<'lease.revoke_requested'>,
    ): Promise<string> {
      const { reason, nowMs, force = false } = request;
      const args = [leaseId, nowMs, reason, force ? '1' : '0', serializeAuditEvent(audit)];
      return run('markRevoking', [keys.lease(leaseId), keys.due(), keys.audit()], args, { confirm: false });
    },

    /** Waits for the replicas to hold every write made so far (NotReplicatedError when they do not in time). */
    confirmWrites: () => durable.confirm(),

    /** `retrying` (with its `lease.retry_requested` appended) when the lease is irrevocable. */
    markRetry: (leaseId: string, nowMs: number, audit: LeaseAuditEvent<'lease.retry_requested'>) =>
      run(
        'markRetry',
        [keys.lease(leaseId), keys.due(), keys.audit()],
        [leaseId, nowMs, serializeAuditEvent(audit)],
      ),

    async settle(
      lease: Pick<Lease, 'id' | 'taskId' | 'issuer' | 'subject'>,
      outcome: {
        state: 'revoked' | 'expired' | 'force-closed';
        revocation: string;
        detail?: string;
        reason?: string;
      },
      nowMs: number,
      audit: LeaseAuditEvent<'lease.settled' | 'lease.force_closed'>,
    ) {
      const leaseId = lease.id;
      const keyList = [
        keys.lease(leaseId),
        keys.due(),
        keys.irrevocable(),
        keys.task(lease.taskId),
        keys.settled(),
        keys.identityUnsettled(identityKey(lease.issuer, lease.subject)),
        keys.audit(),
      ];
      const { state, revocation, reason = '', detail = '' } = outcome;
      const args = [leaseId, state, revocation, nowMs, reason, detail, serializeAuditEvent(audit)];
      return run('settleLease', keyList, args);
    },

    /** Drops settled leases past the retention period, with their index entries; returns how many went. */
    async purgeSettled(nowMs: number, limit: number): Promise<number> {
      const cutoffMs = nowMs - options.retentionSeconds * 1000;
      const ids = await redis.zrangebyscore(keys.settled(), '-inf', cutoffMs, 'LIMIT', 0, limit);
      if (ids.length === 0) return 0;
      // Two round trips: read what names each lease's index keys, then delete each (re-checked in the script).
      const reads = redis.pipeline();
      for (const id of ids) reads.hmget(keys.lease(id), 'taskId', 'issuer', 'subject', 'grant');
      const fields = ((await reads.exec()) ?? []).map(([, reply]) => (reply ?? []) as (string | null)[]);
      const purge = redis.pipeline();
      ids.forEach((id, index) => {
        const [taskId, issuer, subject, grant] = (fields[index] ?? []).map((value) => value ?? '');
        const leaseKeys = [
          keys.settled(),
          keys.lease(id),
          keys.taskLeases(taskId ?? ''),
          keys.identityLeases(identityKey(issuer ?? '', subject ?? '')),
          keys.grantLeases(grant ?? ''),
        ];
        queueScript(purge, 'purgeSettledLease', leaseKeys, [id, cutoffMs]);
      });
      const replies = (await purge.exec()) ?? [];
      const failed = replies.find(([error]) => error);
      if (failed) throw failed[0];
      return ids.length;
    },

    /**
     * A failed attempt that will be retried: counted, its error kept, and its `lease.revoke_failed` appended,
     * in one MULTI (not a change of state, so no script: the attempt failed whatever the lease's state).
     */
    async recordFailure(
      leaseId: string,
      error: string,
      audit: LeaseAuditEvent<'lease.revoke_failed'>,
    ): Promise<void> {
      await redis
        .multi()
        .hset(keys.lease(leaseId), 'lastError', error)
        .hincrby(keys.lease(leaseId), 'attempts', 1)
        .xadd(keys.audit(), '*', 'event', serializeAuditEvent(audit))
        .exec();
    },

    /**
     * The last attempt failed: counted, and the lease irrevocable with its `lease.irrevocable` appended
     * (`became` the first time, `still` after); `settled` (nothing written) if it settled meanwhile.
     */
    async markIrrevocable(
      leaseId: string,
      failure: { error: string; nowMs: number; retryAtMs: number },
      audit: LeaseAuditEvent<'lease.irrevocable'>,
    ): Promise<string> {
      const { error, nowMs, retryAtMs } = failure;
      return run(
        'markIrrevocable',
        [keys.lease(leaseId), keys.due(), keys.irrevocable(), keys.audit()],
        [leaseId, nowMs, retryAtMs, error, serializeAuditEvent(audit)],
      );
    },

    /** Unsettled leases the sweeper must act on: due at or before `untilMs`. */
    /**
     * The leases due by `nowMs`, at most `limit`, each made due again at `dueAgainAtMs` in the same script
     * (claimDue): the scheduler queues their jobs, and one whose job is lost comes due again.
     */
    async claimDue(nowMs: number, dueAgainAtMs: number, limit: number): Promise<string[]> {
      return (await redis.claimDue(keys.due(), nowMs, dueAgainAtMs, limit)) as string[];
    },

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
