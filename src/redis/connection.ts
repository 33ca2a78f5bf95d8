import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisTarget } from '../config/redis-target';
import type { RedisClient } from './redis-client';
import { defineScripts } from './scripts';

export type { RedisClient };

export interface ConnectOptions {
  /** For BullMQ's workers, which block on their connection and need `maxRetriesPerRequest: null`. */
  forBullWorker?: boolean;
  name?: string;
  autoPipelining?: boolean;
}

/**
 * One connection per process role, for any topology. `maxRetriesPerRequest: null` is what BullMQ requires
 * of the connections its workers block on; command timeouts bound every other call, so a dead Redis is an
 * error, not a hang. Sentinel clients follow failovers as Sentinel announces them (`failoverDetector`), not
 * only when the old primary stops answering: writes acknowledged by a demoted primary are what a failover
 * loses. Every Lua script is defined on the connection (scripts.ts).
 */
export function connectRedis(target: RedisTarget, options: ConnectOptions = {}): RedisClient {
  const common: RedisOptions = {
    connectionName: options.name,
    maxRetriesPerRequest: options.forBullWorker ? null : 2,
    commandTimeout: options.forBullWorker ? undefined : 5_000,
    enableOfflineQueue: options.forBullWorker ?? false,
    // Auto-pipelining pays where many commands are in flight at once (the worker's 64 concurrent jobs); on
    // the API it cost CPU and tail latency at 1,000/s (docs/benchmark.md), so the caller chooses.
    enableAutoPipelining: options.autoPipelining ?? false,
    username: target.username,
    password: target.password,
    ...(target.tls ? { tls: {} } : {}),
  };
  const client = ((): RedisClient => {
    switch (target.kind) {
      case 'single':
        return new Redis({ ...common, ...target.address, db: target.db });
      case 'sentinel':
        return new Redis({
          ...common,
          sentinels: target.sentinels,
          name: target.masterName,
          role: 'master',
          sentinelPassword: target.sentinelPassword,
          ...(target.tls ? { enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
          failoverDetector: true,
        });
      case 'cluster':
        return new Cluster(target.nodes, {
          redisOptions: common,
          // Every key shares one slot, on a primary: replicas are never read from (they may lag).
          scaleReads: 'master',
          enableOfflineQueue: common.enableOfflineQueue,
          enableAutoPipelining: common.enableAutoPipelining,
          maxRedirections: 16,
          retryDelayOnFailover: 200,
          retryDelayOnClusterDown: 200,
        });
      default:
        return target satisfies never;
    }
  })();
  defineScripts(client);
  if (target.kind === 'sentinel') reconnectAfterEnd(client);
  return client;
}

/** Connections closed on purpose (closeRedis): the only ones allowed to stay ended. */
const closing = new WeakSet<RedisClient>();

/**
 * ioredis ends a Sentinel connection for good when it is disconnected while connecting: its failover
 * detector disconnects on `+switch-master`, and SentinelConnector.connect then throws "Connection is
 * closed", which sets the status to `end` with no reconnect (seen in a kill -9 failover here, ioredis
 * 5.11). A broker whose connection ended would never write again, so it connects again.
 */
function reconnectAfterEnd(client: RedisClient): void {
  client.on('end', () => {
    if (closing.has(client)) return;
    setTimeout(() => {
      if (!closing.has(client) && client.status === 'end') client.connect().catch(() => undefined);
    }, 200).unref();
  });
}

/** Resolves once the connection is ready; rejects after `timeoutMs` with the last error seen. */
export async function waitForReady(redis: RedisClient, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return;
  let lastError: Error | undefined;
  const onError = (error: Error) => (lastError = error);
  redis.on('error', onError);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(lastError ?? new Error(`not ready within ${timeoutMs} ms`)),
        timeoutMs,
      );
      redis.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } finally {
    redis.off('error', onError);
  }
}

/**
 * Closes a connection for good. `quit()` lets queued commands finish; the `disconnect()` after it also
 * closes what `quit()` leaves behind: a Sentinel client's failover detector keeps its own connections to
 * every sentinel open, and they would keep the process alive.
 */
/** Drops a connection at once (what it had queued fails), and stops it reconnecting. */
export function disconnectRedis(redis: RedisClient): void {
  closing.add(redis);
  redis.disconnect();
}

export async function closeRedis(redis: RedisClient): Promise<void> {
  closing.add(redis);
  if (redis.status !== 'end') await redis.quit().catch(() => undefined);
  redis.disconnect();
}
