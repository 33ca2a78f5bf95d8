import { Redis } from 'ioredis';

/**
 * One connection per process role. `maxRetriesPerRequest: null` is what BullMQ requires of the connections
 * its workers block on; command timeouts bound every other call so a dead Redis is an error, not a hang.
 */
export function connectRedis(url: string, options: { forBullWorker?: boolean; name?: string } = {}): Redis {
  return new Redis(url, {
    connectionName: options.name,
    maxRetriesPerRequest: options.forBullWorker ? null : 2,
    commandTimeout: options.forBullWorker ? undefined : 5_000,
    enableOfflineQueue: options.forBullWorker ?? false,
    lazyConnect: false,
  });
}

/** Policies under which Redis may evict keys: a lease must never vanish, so start-up refuses these. */
const EVICTING = /^(allkeys|volatile)-/;

export async function assertNoEviction(redis: Redis): Promise<void> {
  const reply = (await redis.config('GET', 'maxmemory-policy')) as string[];
  const policy = reply[1] ?? 'unknown';
  if (EVICTING.test(policy)) {
    throw new Error(
      `Redis maxmemory-policy is "${policy}": Redis could evict leases. Set "maxmemory-policy noeviction".`,
    );
  }
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
