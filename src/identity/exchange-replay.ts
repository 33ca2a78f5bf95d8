import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';

/**
 * One exchange per subject token and grant (RFC 8693 leaves replay to the server; a CI token is a bearer
 * proof that may leak into logs). The mark is taken before issuing, so two concurrent exchanges of one token
 * cannot both win, and given back when nothing was issued, so a failed exchange can be retried.
 */
export interface ExchangeReplay {
  /** False when the token was already exchanged for the grant. */
  take(tokenSha256: string, grant: string, tokenExpiresAtMs: number, nowMs: number): Promise<boolean>;
  giveBack(tokenSha256: string, grant: string): Promise<void>;
}

export function createExchangeReplay(redis: RedisClient, keys: RedisKeys): ExchangeReplay {
  return {
    async take(tokenSha256, grant, tokenExpiresAtMs, nowMs) {
      // Kept past the token's exp by a margin: a verifier with clock skew may still accept it a little longer.
      const ttlMs = Math.max(1000, tokenExpiresAtMs - nowMs + 5 * 60_000);
      return (await redis.set(keys.exchanged(tokenSha256, grant), String(nowMs), 'PX', ttlMs, 'NX')) === 'OK';
    },
    async giveBack(tokenSha256, grant) {
      await redis.del(keys.exchanged(tokenSha256, grant));
    },
  };
}
