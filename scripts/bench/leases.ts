import type { Redis } from 'ioredis';
import { sendMany, summarise, type LatencySummary, type Target } from './load-generator';
import { REDIS_PREFIX } from './processes';

/** Key names as src/leases/keys.ts builds them, under the bench's prefix. */
const key = {
  lease: (id: string) => `${REDIS_PREFIX}lease:${id}`,
  settled: `${REDIS_PREFIX}leases:settled`,
  due: `${REDIS_PREFIX}leases:due`,
  audit: `${REDIS_PREFIX}audit`,
  bullDelayed: `${REDIS_PREFIX}bull:revocations:delayed`,
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Issues `count` leases as fast as the broker answers; returns the ids of those issued and the failures. */
export async function issue(
  target: Target,
  count: number,
  connections: number,
): Promise<{ ids: string[]; failures: number; ms: number }> {
  const startedMs = performance.now();
  const replies = await sendMany(target, count, connections, () => target.next());
  const ids = replies.flatMap((reply) =>
    reply.status === 201 ? [(JSON.parse(reply.body.toString()) as { leaseId: string }).leaseId] : [],
  );
  return { ids, failures: count - ids.length, ms: Math.round(performance.now() - startedMs) };
}

export interface RevocationLagResult {
  leases: number;
  issueFailures: number;
  issueMs: number;
  /** max − min of expiresAtMs: how "together" the batch expired (TTLs are whole seconds). */
  expirySpreadMs: number;
  settled: number;
  unsettled: number;
  states: Record<string, number>;
  /** revokedAtMs − expiresAtMs per lease, as the worker recorded it. */
  lag: LatencySummary;
  /** Last settle − first expiry: the whole batch, from its first expiry to its last revocation. */
  drainMs: number;
  /** Last settle − last expiry. */
  drainAfterLastExpiryMs: number;
}

/**
 * Issues a batch of short-lived leases, waits for the worker to settle every one of them (polling the
 * settled index, which the worker writes), then reads each lease's own timestamps: the lag is what the
 * worker recorded, not when the bench happened to look.
 */
export async function measureRevocationLag(
  redis: Redis,
  target: Target,
  options: { count: number; connections: number; timeoutMs: number },
): Promise<RevocationLagResult> {
  const { ids, failures, ms } = await issue(target, options.count, options.connections);
  const remaining = await waitUntilSettled(redis, ids, options.timeoutMs);
  const rows = await readLeases(redis, ids, ['state', 'expiresAtMs', 'revokedAtMs']);
  const states: Record<string, number> = {};
  const lags: number[] = [];
  let firstExpiry = Infinity;
  let lastExpiry = -Infinity;
  let lastSettle = -Infinity;
  for (const [state, expiresAt, revokedAt] of rows) {
    states[state ?? 'missing'] = (states[state ?? 'missing'] ?? 0) + 1;
    const expiresAtMs = Number(expiresAt);
    firstExpiry = Math.min(firstExpiry, expiresAtMs);
    lastExpiry = Math.max(lastExpiry, expiresAtMs);
    if (!revokedAt) continue;
    lags.push(Number(revokedAt) - expiresAtMs);
    lastSettle = Math.max(lastSettle, Number(revokedAt));
  }
  const complete = remaining.length === 0 && ids.length > 0;
  return {
    leases: ids.length,
    issueFailures: failures,
    issueMs: ms,
    expirySpreadMs: lastExpiry - firstExpiry,
    settled: ids.length - remaining.length,
    unsettled: remaining.length,
    states,
    lag: summarise(lags),
    drainMs: complete ? lastSettle - firstExpiry : NaN,
    drainAfterLastExpiryMs: complete ? lastSettle - lastExpiry : NaN,
  };
}

/**
 * Polls the settled index (which the worker writes) until every lease in `ids` is in it or `timeoutMs`
 * passes; returns the ids still unsettled. How often it polls does not matter to the figures: they are read
 * from each lease's own timestamps afterwards.
 */
export async function waitUntilSettled(redis: Redis, ids: readonly string[], timeoutMs: number) {
  let remaining = [...ids];
  const deadline = Date.now() + timeoutMs;
  while (remaining.length > 0 && Date.now() < deadline) {
    await sleep(250);
    const still: string[] = [];
    for (let i = 0; i < remaining.length; i += 1000) {
      const chunk = remaining.slice(i, i + 1000);
      const scores = await redis.zmscore(key.settled, ...chunk);
      chunk.forEach((id, index) => scores[index] === null && still.push(id));
    }
    remaining = still;
  }
  return remaining;
}

/** The given fields of each lease, in one pipeline. */
export async function readLeases(redis: Redis, ids: readonly string[], fields: string[]) {
  const pipeline = redis.pipeline();
  for (const id of ids) pipeline.hmget(key.lease(id), ...fields);
  return ((await pipeline.exec()) ?? []).map(([, row]) => row as (string | null)[]);
}

/**
 * A TTL that makes leases issued over several seconds expire within one second of each other: each request
 * asks for the whole seconds left until `expireAtMs` (whole seconds are all the API accepts).
 */
export function alignedTtl(expireAtMs: number): () => number {
  return () => Math.max(2, Math.ceil((expireAtMs - Date.now()) / 1000));
}

export interface MemoryResult {
  leases: number;
  issueFailures: number;
  usedMemoryBeforeBytes: number;
  usedMemoryAfterBytes: number;
  bytesPerLease: number;
  projectedBytesFor1M: number;
  /** Approximate per-lease share of the main structures (MEMORY USAGE, averaged or differenced). */
  breakdownBytesPerLease: Record<string, number>;
}

const usedMemory = async (redis: Redis) => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
const memoryUsage = async (redis: Redis, name: string) =>
  Number((await redis.call('MEMORY', 'USAGE', name, 'SAMPLES', '0')) ?? 0);

async function meanMemoryUsage(redis: Redis, names: string[]): Promise<number> {
  const sizes = await Promise.all(names.map((name) => memoryUsage(redis, name)));
  return Math.round(sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length));
}

/** Redis bytes per active lease: INFO used_memory before and after issuing `count` long-lived leases. */
export async function measureBytesPerLease(
  redis: Redis,
  target: Target,
  options: { count: number; connections: number },
): Promise<MemoryResult> {
  // The delayed set: what a lease costs BullMQ while it waits (nothing, since the scheduler queues leases due).
  const shared = [key.audit, key.due, key.bullDelayed];
  await sleep(1000);
  const before = await usedMemory(redis);
  const sharedBefore = await Promise.all(shared.map((name) => memoryUsage(redis, name)));
  const { ids, failures } = await issue(target, options.count, options.connections);
  await sleep(1000);
  const after = await usedMemory(redis);
  const sharedAfter = await Promise.all(shared.map((name) => memoryUsage(redis, name)));
  const perLease = (after - before) / Math.max(1, ids.length);
  const sample = ids.slice(0, 200);
  const perShared = (index: number) =>
    Math.round(((sharedAfter[index] ?? 0) - (sharedBefore[index] ?? 0)) / Math.max(1, ids.length));
  const breakdown: Record<string, number> = {
    leaseHash: await meanMemoryUsage(redis, sample.map(key.lease)),
    auditStream: perShared(0),
    dueIndex: perShared(1),
    bullDelayedZset: perShared(2),
  };
  breakdown.restIndexSetsKeyspace = Math.round(
    perLease - Object.values(breakdown).reduce((a, b) => a + b, 0),
  );
  return {
    leases: ids.length,
    issueFailures: failures,
    usedMemoryBeforeBytes: before,
    usedMemoryAfterBytes: after,
    bytesPerLease: Math.round(perLease),
    projectedBytesFor1M: Math.round(perLease * 1_000_000),
    breakdownBytesPerLease: breakdown,
  };
}
