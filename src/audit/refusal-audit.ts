import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { BrokerError } from '../domain/errors';
import { identityKey } from '../domain/types';
import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';
import type { AuditEvent, AuditLog } from './audit-log';

/**
 * Refusals (a forbidden admin call, a policy denial, a replayed token) are audited, but a caller refused
 * over and over must not be able to fill the log: each identity gets `perMinute` refusal events a minute,
 * counted in Redis across API replicas by rate-limiter-flexible. The first refusal beyond that writes one
 * `refusal.limited` event (so a reviewer sees the flood began, and until when it is not itemised); the rest
 * of the minute is only counted (`onUnaudited`, a metric). Every refusal beyond the budget answers
 * 429 too_many_refusals instead of its own code, with Retry-After: the caller learns nothing more by trying.
 */
export interface RefusalAudit {
  /** Audits a refusal event within the identity's budget, or throws 429 too_many_refusals beyond it. */
  record(event: AuditEvent & { issuer: string; subject: string }): Promise<void>;
}

export function createRefusalAudit(options: {
  redis: RedisClient;
  keys: RedisKeys;
  audit: Pick<AuditLog, 'append'>;
  perMinute: number;
  onUnaudited: (type: AuditEvent['type']) => void;
}): RefusalAudit {
  const { perMinute } = options;
  const limiter = new RateLimiterRedis({
    storeClient: options.redis,
    keyPrefix: options.keys.refusals(),
    points: perMinute,
    duration: 60,
  });
  const spend = async (who: string): Promise<RateLimiterRes | null> => {
    try {
      await limiter.consume(who);
      return null;
    } catch (error) {
      if (error instanceof RateLimiterRes) return error;
      throw error;
    }
  };
  return {
    async record(event) {
      const over = await spend(identityKey(event.issuer, event.subject));
      if (!over) return options.audit.append(event);
      const untilMs = event.atMs + over.msBeforeNext;
      options.onUnaudited(event.type);
      if (over.consumedPoints === perMinute + 1)
        await options.audit.append(limitedEvent(event, perMinute, untilMs));
      throw new BrokerError(
        'too_many_refusals',
        `more than ${perMinute} refused requests a minute from this identity`,
        { retryAfterSeconds: Math.max(1, Math.ceil(over.msBeforeNext / 1000)) },
      );
    },
  };
}

/** The one event that stands for the refusals of the rest of the minute. */
function limitedEvent(first: AuditEvent, perMinute: number, untilMs: number): AuditEvent {
  return {
    type: 'refusal.limited',
    atMs: first.atMs,
    issuer: first.issuer,
    subject: first.subject,
    ...(first.tokenSha256 ? { tokenSha256: first.tokenSha256 } : {}),
    reason: `more than ${perMinute} refusals a minute: refusals until ${new Date(untilMs).toISOString()} answer 429 and are counted, not audited`,
    detail: { refused: first.type, perMinute, until: new Date(untilMs).toISOString() },
  };
}
