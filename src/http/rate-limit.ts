import type { RequestHandler, Response } from 'express';
import type { RedisClient } from '../redis/connection';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { BrokerError } from '../domain/errors';
import { identityKey, type AdminCaller } from '../domain/types';
import type { RedisKeys } from '../redis/keys';
import { callerOf } from './authenticate';

/**
 * Spends one request of the caller's per-minute allowance (a workload, an admin, or a break-glass entry, each
 * by issuer + subject); throws 429 rate_limited (with Retry-After) when none is left.
 */
export type RateLimit = (caller: Pick<AdminCaller, 'issuer' | 'subject'>, res: Response) => Promise<void>;

/**
 * Requests per minute per identity (issuer + subject), counted in Redis by rate-limiter-flexible so the
 * limit holds across API replicas. Null when no limit is configured: the hot path then makes no extra
 * Redis call. When Redis fails the request fails with it (503), as everything else would.
 */
export function createRateLimit(
  redis: RedisClient,
  keys: RedisKeys,
  perMinute: number | undefined,
): RateLimit | null {
  if (!perMinute) return null;
  const limiter = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: keys.rateLimit(),
    points: perMinute,
    duration: 60,
  });
  return async (caller, res) => {
    try {
      await limiter.consume(identityKey(caller.issuer, caller.subject));
    } catch (error) {
      if (!(error instanceof RateLimiterRes)) throw error;
      res.set('Retry-After', String(Math.max(1, Math.ceil(error.msBeforeNext / 1000))));
      throw new BrokerError('rate_limited', `more than ${perMinute} requests a minute from this identity`);
    }
  };
}

/** The same, as middleware after `authenticate`. */
export const rateLimitMiddleware =
  (limit: RateLimit): RequestHandler =>
  async (_req, res, next) => {
    await limit(callerOf(res), res);
    next();
  };
