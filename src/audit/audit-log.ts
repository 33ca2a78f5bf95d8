import type { Redis } from 'ioredis';
import type { RedisKeys } from '../leases/keys';

export type AuditType =
  | 'task.declared'
  | 'task.denied'
  | 'task.completed'
  | 'credential.issued'
  | 'credential.denied'
  | 'lease.revoke_requested'
  | 'lease.retry_requested'
  | 'lease.settled'
  | 'lease.revoke_failed'
  | 'lease.irrevocable'
  | 'lease.force_closed';

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

/** The stream entry's value. Also used where an event is appended atomically with other writes (a lease). */
export const serializeAuditEvent = (event: AuditEvent): string => JSON.stringify(event);

/** Append-only log in a Redis Stream, oldest first. (Hash chaining arrives with the on-call issue.) */
export function createAuditLog(redis: Redis, keys: RedisKeys) {
  return {
    async append(event: AuditEvent): Promise<void> {
      await redis.xadd(keys.audit(), '*', 'event', serializeAuditEvent(event));
    },

    /** Several events in one round trip, in order. */
    async appendMany(events: readonly AuditEvent[]): Promise<void> {
      if (events.length === 0) return;
      const pipeline = redis.pipeline();
      for (const event of events) pipeline.xadd(keys.audit(), '*', 'event', serializeAuditEvent(event));
      const replies = (await pipeline.exec()) ?? [];
      const failed = replies.find(([error]) => error);
      if (failed) throw failed[0];
    },

    async query(filter: AuditFilter): Promise<StoredAuditEvent[]> {
      const out: StoredAuditEvent[] = [];
      let start = '-';
      for (;;) {
        const page = await redis.xrange(keys.audit(), start, '+', 'COUNT', 1000);
        for (const [id, fields] of page) {
          const event = JSON.parse(fields[1] ?? '{}') as AuditEvent;
          const matches =
            (!filter.task || event.task === filter.task) &&
            (!filter.lease || event.lease === filter.lease) &&
            (!filter.issuer || event.issuer === filter.issuer) &&
            (!filter.subject || event.subject === filter.subject);
          if (matches) out.push({ id, ...event });
          if (out.length >= filter.limit) return out;
        }
        if (page.length < 1000) return out;
        start = `(${page[page.length - 1]?.[0]}`;
      }
    },
  };
}
