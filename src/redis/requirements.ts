import { Cluster, type Redis } from 'ioredis';
import type { RedisClient } from './connection';

/** A Redis tasklease cannot store leases on; the message names the address and what to change. */
export class RedisUnusableError extends Error {
  override name = 'RedisUnusableError';
}

/** Policies under which Redis may evict keys: a lease must never vanish, so start-up refuses these. */
const EVICTING = /^(allkeys|volatile)-/;

/**
 * Above `hash-max-listpack-value` (64 by default) Redis switches a whole hash to its large encoding. A lease's
 * hash holds its provider's handle in one field (an STS handle is ~200 bytes): 256 keeps such a lease ~700 B
 * smaller (measured: 688 B against 1,387 B); a revocation job's options (~180 bytes) are in the same case.
 * A recommendation, not a requirement: below it the broker warns and runs.
 */
export const RECOMMENDED_LISTPACK_VALUE = 256;

/** Where a node connection points: the address its socket reached (Sentinel resolves it), else its options. */
export function addressOf(node: Redis): string {
  const socket = node.stream as { remoteAddress?: string; remotePort?: number } | undefined;
  const host = socket?.remoteAddress ?? node.options.host ?? '?';
  const port = socket?.remotePort ?? node.options.port ?? 0;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The primaries a connection writes to: the one server, the primary Sentinel named, every cluster primary. */
export const primariesOf = (redis: RedisClient): Redis[] =>
  redis instanceof Cluster ? redis.nodes('master') : [redis];

const infoField = (info: string, field: string) =>
  new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';

export interface NodeFacts {
  role: string;
  /** The primary's replication id: it changes when another node is promoted, or the server restarts anew. */
  replicationId: string;
  evictionPolicy: string;
}

/** What this node is, from `INFO replication` and `CONFIG GET maxmemory-policy`. */
export async function readNodeFacts(node: Redis): Promise<NodeFacts> {
  const info = await node.info('replication');
  return {
    role: infoField(info, 'role'),
    replicationId: infoField(info, 'master_replid'),
    evictionPolicy: await evictionPolicy(node, addressOf(node)),
  };
}

async function evictionPolicy(node: Redis, address: string): Promise<string> {
  // Fails closed: a Redis whose eviction policy cannot be read (CONFIG disabled, as some managed services
  // do) is refused too, with the reason, rather than trusted blindly.
  const reply = (await node.config('GET', 'maxmemory-policy').catch((error: Error) => {
    throw new RedisUnusableError(
      `cannot read maxmemory-policy of Redis ${address} (${error.message}); tasklease needs to verify it is ` +
        '"noeviction" before it stores leases. Allow CONFIG GET for the broker, or use a Redis where it is allowed.',
    );
  })) as string[];
  return reply[1] ?? 'unknown';
}

export type Unusable = { kind: 'not-primary' | 'evicting'; message: string };

/** Why tasklease may not write to a node with these facts, or null when it may. */
export function unusableBecause(facts: NodeFacts, address: string): Unusable | null {
  if (facts.role !== 'master')
    return {
      kind: 'not-primary',
      message: `Redis ${address} is a ${facts.role || 'node of unknown role'}, not a primary: writes there would be refused or lost`,
    };
  if (EVICTING.test(facts.evictionPolicy))
    return {
      kind: 'evicting',
      message:
        `Redis ${address} maxmemory-policy is "${facts.evictionPolicy}": Redis could evict leases. ` +
        'Set "maxmemory-policy noeviction".',
    };
  return null;
}

/** Checks every primary at start-up; throws RedisUnusableError naming the first one that cannot be used. */
export async function assertPrimariesUsable(redis: RedisClient): Promise<void> {
  const primaries = primariesOf(redis);
  if (primaries.length === 0) throw new RedisUnusableError('the Redis Cluster has no primary reachable');
  for (const node of primaries) {
    const address = addressOf(node);
    const problem = unusableBecause(await readNodeFacts(node), address);
    if (problem) throw new RedisUnusableError(problem.message);
  }
}

/** The primaries whose `hash-max-listpack-value` is below the recommendation, with their value. */
export async function smallListpackValues(redis: RedisClient): Promise<{ address: string; value: number }[]> {
  const found: { address: string; value: number }[] = [];
  for (const node of primariesOf(redis)) {
    const reply = (await node.config('GET', 'hash-max-listpack-value').catch(() => [])) as string[];
    const value = Number(reply[1]);
    if (Number.isFinite(value) && value < RECOMMENDED_LISTPACK_VALUE)
      found.push({ address: addressOf(node), value });
  }
  return found;
}
