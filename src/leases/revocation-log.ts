import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';
import { runScript } from '../redis/scripts';

/** How long a revocation can be followed: far beyond any `--wait`, short enough not to pile up. */
export const REVOCATION_FOLLOW_SECONDS = 86_400;
/**
 * Leases counted per script call (countStates-var.lua counts inside Redis, so a poll over 10,000 leases sends
 * back a few numbers, not 10,000 replies): about a millisecond of Redis time each, so nothing waits long.
 */
const COUNT_CHUNK = 1000;

export interface StateCounts {
  byState: Record<string, number>;
  retrying: number;
  irrevocableLeaseIds: string[];
}

export type RevocationLog = ReturnType<typeof createRevocationLog>;

/**
 * Which leases one admin revocation matched, under the revocation's id, so its caller can follow them until
 * they settle (`GET /v1/leases/revocations/{id}`). One string of comma-separated ids (33 B a lease), written
 * once and read whole: 10,000 leases are one 330 KB value, not a 10,000-member set.
 */
export function createRevocationLog(redis: RedisClient, keys: RedisKeys) {
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

    /** The leases counted by their state now, and the ids of the first `listIrrevocable` irrevocable ones. */
    async countStates(leaseIds: readonly string[], listIrrevocable: number): Promise<StateCounts> {
      const counts: StateCounts = { byState: {}, retrying: 0, irrevocableLeaseIds: [] };
      for (let i = 0; i < leaseIds.length; i += COUNT_CHUNK) {
        const chunk = leaseIds.slice(i, i + COUNT_CHUNK);
        const room = listIrrevocable - counts.irrevocableLeaseIds.length;
        const [flat, retrying, irrevocable] = (await runScript(redis, 'countStates', chunk.map(keys.lease), [
          room,
        ])) as [(string | number)[], number, number[]];
        for (let j = 0; j < flat.length; j += 2) {
          const state = String(flat[j]);
          counts.byState[state] = (counts.byState[state] ?? 0) + Number(flat[j + 1]);
        }
        counts.retrying += retrying;
        counts.irrevocableLeaseIds.push(...irrevocable.map((index) => chunk[index - 1] as string));
      }
      return counts;
    },
  };
}
