import type { Redis } from 'ioredis';
import type { RedisKeys } from './keys';

/** How long a revocation can be followed: far beyond any `--wait`, short enough not to pile up. */
export const REVOCATION_FOLLOW_SECONDS = 86_400;

export type RevocationLog = ReturnType<typeof createRevocationLog>;

/**
 * Which leases one admin revocation matched, under the revocation's id, so its caller can follow them until
 * they settle (`GET /v1/leases/revocations/{id}`). One string of comma-separated ids (33 B a lease), written
 * once and read whole: 10,000 leases are one 330 KB value, not a 10,000-member set.
 */
export function createRevocationLog(redis: Redis, keys: RedisKeys) {
  return {
    async record(revocationId: string, leaseIds: readonly string[]): Promise<void> {
      await redis.set(keys.revocation(revocationId), leaseIds.join(','), 'EX', REVOCATION_FOLLOW_SECONDS);
    },

    /** The recorded lease ids, or null when there is no such revocation (or it is older than a day). */
    async leaseIds(revocationId: string): Promise<string[] | null> {
      const value = await redis.get(keys.revocation(revocationId));
      if (value === null) return null;
      return value === '' ? [] : value.split(',');
    },
  };
}
