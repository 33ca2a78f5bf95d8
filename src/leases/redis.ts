import { Redis } from 'ioredis';

/**
 * One connection per process role. `maxRetriesPerRequest: null` is what BullMQ requires of the connections
 * its workers block on; command timeouts bound every other call so a dead Redis is an error, not a hang.
 */
export function connectRedis(
  url: string,
  options: { forBullWorker?: boolean; name?: string; autoPipelining?: boolean } = {},
): Redis {
  return new Redis(url, {
    connectionName: options.name,
    maxRetriesPerRequest: options.forBullWorker ? null : 2,
    commandTimeout: options.forBullWorker ? undefined : 5_000,
    enableOfflineQueue: options.forBullWorker ?? false,
    // Auto-pipelining pays where many commands are in flight at once (the worker's 64 concurrent jobs); on
    // the API it cost CPU and tail latency at 1,000/s (docs/benchmark.md), so the caller chooses.
    enableAutoPipelining: options.autoPipelining ?? false,
    lazyConnect: false,
  });
}

/** Policies under which Redis may evict keys: a lease must never vanish, so start-up refuses these. */
const EVICTING = /^(allkeys|volatile)-/;

export async function assertNoEviction(redis: Redis): Promise<void> {
  // Fails closed: a Redis whose eviction policy cannot be read (CONFIG disabled, as some managed services
  // do) is refused too, with the reason, rather than trusted blindly.
  const reply = (await redis.config('GET', 'maxmemory-policy').catch((error: Error) => {
    throw new Error(
      `cannot read Redis maxmemory-policy (${error.message}); tasklease needs to verify it is "noeviction" ` +
        'before it stores leases. Allow CONFIG GET for the broker, or use a Redis where it is allowed.',
    );
  })) as string[];
  const policy = reply[1] ?? 'unknown';
  if (EVICTING.test(policy)) {
    throw new Error(
      `Redis maxmemory-policy is "${policy}": Redis could evict leases. Set "maxmemory-policy noeviction".`,
    );
  }
}

/**
 * BullMQ stores a job's options (~160 bytes) in its hash; above `hash-max-listpack-value` (64 by default)
 * Redis switches the whole hash to its large encoding. 256 keeps a delayed revocation job ~400 B
 * smaller (measured: ~680 B against ~1,080 B). A recommendation, not a requirement: below it the broker warns and runs.
 */
export const RECOMMENDED_LISTPACK_VALUE = 256;

export async function listpackValueTooSmall(redis: Redis): Promise<number | null> {
  const reply = (await redis.config('GET', 'hash-max-listpack-value').catch(() => [])) as string[];
  const value = Number(reply[1]);
  return Number.isFinite(value) && value < RECOMMENDED_LISTPACK_VALUE ? value : null;
}

export async function waitForRedis(redis: Redis, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await redis.ping();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** A record as `HSET` arguments (field, value, ...): absent members are left out, every value a string. */
export const hashFields = (record: object): string[] =>
  Object.entries(record).flatMap(([key, value]) =>
    value === undefined || value === null ? [] : [key, String(value)],
  );
