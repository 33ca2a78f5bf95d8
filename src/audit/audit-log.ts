import type { RedisClient } from '../redis/connection';
import { NotReplicatedError, type DurableWrites } from '../redis/durable-writes';
import type { RedisKeys } from '../redis/keys';
import { streamIdKey } from './stream-ids';

export type AuditType =
  | 'task.declared'
  | 'task.denied'
  | 'refusal.limited'
  | 'task.completed'
  | 'credential.issued'
  | 'credential.denied'
  | 'lease.revoke_requested'
  | 'lease.retry_requested'
  | 'lease.settled'
  | 'lease.revoke_failed'
  | 'lease.irrevocable'
  | 'lease.force_closed'
  | 'lease.restored'
  | 'admin.call'
  | 'approval.requested'
  | 'approval.approved'
  | 'approval.denied'
  | 'approval.expired'
  | 'approval.refused'
  | 'enrolment.revoked'
  | 'entitlement.revoked'
  | 'entitlement.recertified'
  | 'audit.restored'
  | 'audit.trimmed';

/** One audit event. Identifiers and hashes only: never a token, a credential or a key. */
export interface AuditEvent {
  type: AuditType;
  atMs: number;
  issuer?: string;
  subject?: string;
  task?: string;
  ticket?: string;
  ref?: string;
  grant?: string;
  lease?: string;
  /** SHA-256 of the identity token or credential concerned. */
  tokenSha256?: string;
  credentialSha256?: string;
  /** Who acted, when it was not the lease's own identity (an admin, the worker). */
  actor?: string;
  reason?: string;
  detail?: Record<string, string | number | boolean>;
}

export interface StoredAuditEvent extends AuditEvent {
  id: string;
}

export interface AuditFilter {
  task?: string;
  lease?: string;
  issuer?: string;
  subject?: string;
  limit: number;
}

export type AuditLog = ReturnType<typeof createAuditLog>;

/** An event as stored: its stream id and its exact JSON, which is what the chain hashes. */
export interface RawAuditEntry {
  id: string;
  json: string;
}

/** A seal as stored: its stream id (the last event it covers) and its JWS. */
export interface StoredSeal {
  id: string;
  jws: string;
}

const toEntries = (page: [string, string[]][]): RawAuditEntry[] =>
  page.map(([id, fields]) => ({ id, json: fields[1] ?? '' }));
const toSeals = (page: [string, string[]][]): StoredSeal[] =>
  page.map(([id, fields]) => ({ id, jws: fields[1] ?? '' }));
/** A cheap pre-test: the JSON must contain each filtered value as a string (JSON escapes it the same way). */
const mightMatch = (json: string, filter: AuditFilter) =>
  [filter.task, filter.lease, filter.subject, filter.issuer].every(
    (value) => value === undefined || json.includes(JSON.stringify(value)),
  );
/** XRANGE's exclusive start after an id, or the beginning. */
const after = (id: string | undefined) => (id ? `(${id}` : '-');

/** The stream entry's value. Also used where an event is appended atomically with other writes (a lease). */
export const serializeAuditEvent = (event: AuditEvent): string => JSON.stringify(event);

/**
 * Append-only log in a Redis Stream, oldest first. Appends stay one `XADD` (inside the lease's own script for
 * an issuance, a revocation request, a retry, an irrevocable mark or a settlement); the sealer (audit-sealer.ts)
 * chains and signs what was appended, in stream order, a moment later.
 */
export function createAuditLog(redis: RedisClient, keys: RedisKeys, durable: DurableWrites) {
  const entries = async (afterId: string | undefined, limit: number): Promise<RawAuditEntry[]> =>
    toEntries(await redis.xrange(keys.audit(), after(afterId), '+', 'COUNT', limit));

  /** Matching events as stored, oldest first (a scan of the stream: an admin call, not a hot path). */
  async function queryRaw(filter: AuditFilter & { afterId?: string }): Promise<RawAuditEntry[]> {
    const out: RawAuditEntry[] = [];
    let afterId = filter.afterId;
    for (;;) {
      const page = await entries(afterId, 1000);
      for (const entry of page) {
        // Most events are another task's: a substring test spares parsing them on the API's event loop.
        if (!mightMatch(entry.json, filter)) continue;
        const event = JSON.parse(entry.json) as AuditEvent;
        const matches =
          (!filter.task || event.task === filter.task) &&
          (!filter.lease || event.lease === filter.lease) &&
          (!filter.issuer || event.issuer === filter.issuer) &&
          (!filter.subject || event.subject === filter.subject);
        if (matches) out.push(entry);
        if (out.length >= filter.limit) return out;
      }
      if (page.length < 1000) return out;
      afterId = page[page.length - 1]?.id;
    }
  }

  return {
    /**
     * One event on its own (a denial, an admin call...). A lease's transitions never come here: the lease
     * store writes their events inside the transition's own script, so neither exists without the other.
     */
    async append(event: AuditEvent): Promise<void> {
      await redis.xadd(keys.audit(), '*', 'event', serializeAuditEvent(event));
    },

    /** Events in stream order after `afterId` (exclusive), as stored. */
    entries,
    queryRaw,

    async entriesBetween(firstId: string, lastId: string): Promise<RawAuditEntry[]> {
      return toEntries(await redis.xrange(keys.audit(), firstId, lastId));
    },

    async seals(afterId: string | undefined, limit: number): Promise<StoredSeal[]> {
      return toSeals(await redis.xrange(keys.auditSeals(), after(afterId), '+', 'COUNT', limit));
    },

    async newestSeal(): Promise<StoredSeal | null> {
      return toSeals(await redis.xrevrange(keys.auditSeals(), '+', '-', 'COUNT', 1))[0] ?? null;
    },

    /** The newest seal stored at or before `id` (the last seal covering nothing after it). */
    async sealAtOrBefore(id: string): Promise<StoredSeal | null> {
      return toSeals(await redis.xrevrange(keys.auditSeals(), id, '-', 'COUNT', 1))[0] ?? null;
    },

    /**
     * The seals covering events, given their ids in stream order: for each id not yet covered, the seals
     * from it on, a hundred per round trip (the first whose id, its last event, is not before an event
     * covers it).
     */
    async sealsCovering(eventIds: readonly string[]): Promise<StoredSeal[]> {
      const out: StoredSeal[] = [];
      let fetched: StoredSeal[] = [];
      for (const id of eventIds) {
        const key = streamIdKey(id);
        const known = fetched.find((seal) => streamIdKey(seal.id) >= key);
        const seal =
          known ?? (fetched = toSeals(await redis.xrange(keys.auditSeals(), id, '+', 'COUNT', 100)))[0];
        if (!seal) break;
        if (out[out.length - 1]?.id !== seal.id) out.push(seal);
      }
      return out;
    },

    /**
     * Appends a seal only if `previousSealId` is still the newest (appendSeal-1.lua's compare-and-set):
     * `raced` when another sealer appended first; `unconfirmed` when it was appended but fewer replicas than
     * `broker.replicaAcks` confirmed it in time (a failover may still lose it).
     */
    async appendSeal(
      previousSealId: string,
      seal: StoredSeal,
    ): Promise<'appended' | 'raced' | 'unconfirmed'> {
      try {
        const result = await durable.run(
          'appendSeal',
          [keys.auditSeals()],
          [previousSealId, seal.id, seal.jws],
        );
        return result === 1 ? 'appended' : 'raced';
      } catch (error) {
        if (!(error instanceof NotReplicatedError)) throw error;
        return error.result === 1 ? 'unconfirmed' : 'raced';
      }
    },

    async query(filter: AuditFilter): Promise<StoredAuditEvent[]> {
      return (await queryRaw(filter)).map(({ id, json }) => ({ id, ...(JSON.parse(json) as AuditEvent) }));
    },
  };
}
