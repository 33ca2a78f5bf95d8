import { Cluster } from 'ioredis';
import type { RedisClient } from './connection';
import { addressOf, unusableBecause, type NodeFacts, type Unusable } from './requirements';

export interface PrimaryState {
  /** True while the connection writes to a primary that may hold leases (role master, no eviction). */
  usable: boolean;
  /** Why not (absent while usable): the kind, and a message naming the address for the log. */
  problem?: { kind: 'unreachable' | Unusable['kind']; message: string };
  replicationId: string;
}

export interface PrimaryWatch {
  /** Reads the node the connection writes to now (role, replication id, eviction policy). */
  check(): Promise<PrimaryState>;
  /** The last state read, or null before the first check. */
  last(): PrimaryState | null;
  stop(): void;
}

/**
 * Watches the primary this connection writes to: once a second, and at once after every reconnect. A
 * connection to a replica, or to a primary that may evict, makes it unusable (readiness answers 503).
 * When the primary's replication id changes (another node was promoted, or the server restarted without
 * its replication state), `onPrimaryChanged` runs: writes acknowledged just before may be missing there.
 * The commands go in one pipeline with a key under the prefix, which routes them, on a cluster, to the node
 * serving the prefix's slot: the node every tasklease write goes to.
 */
export function watchPrimary(
  redis: RedisClient,
  options: {
    /** Any key under the prefix (its slot is every key's slot). */
    routingKey: string;
    intervalMs: number;
    onPrimaryChanged: (previousId: string, currentId: string) => void;
    /** The connection became unusable, or unusable for another reason (once per change, for the log). */
    onProblem: (message: string) => void;
    onError: (error: unknown) => void;
  },
): PrimaryWatch {
  let last: PrimaryState | null = null;
  let primaryId = '';
  const where = () =>
    redis instanceof Cluster ? `the cluster primary for "${options.routingKey}"` : addressOf(redis);

  async function read(): Promise<NodeFacts> {
    const replies = (await redis
      .pipeline()
      .exists(options.routingKey)
      .info('replication')
      .config('GET', 'maxmemory-policy')
      .exec()) as [Error | null, unknown][];
    const failed = replies.find(([error]) => error);
    if (failed) throw failed[0];
    const info = String(replies[1]?.[1] ?? '');
    const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
    const policy = (replies[2]?.[1] as string[] | undefined)?.[1] ?? 'unknown';
    return { role: field('role'), replicationId: field('master_replid'), evictionPolicy: policy };
  }

  async function check(): Promise<PrimaryState> {
    let state: PrimaryState;
    try {
      const facts = await read();
      const problem = unusableBecause(facts, where());
      state = { usable: !problem, ...(problem ? { problem } : {}), replicationId: facts.replicationId };
    } catch (error) {
      const message = `Redis ${where()}: ${(error as Error).message}`;
      state = { usable: false, problem: { kind: 'unreachable', message }, replicationId: '' };
    }
    if (state.problem && state.problem.message !== last?.problem?.message)
      options.onProblem(state.problem.message);
    last = state;
    // Only a primary's id counts (a replica reports its primary's), and a failed read says nothing: the last
    // primary's id outlives those, so a change is seen once a primary answers again.
    if (state.usable && state.replicationId) {
      if (primaryId && state.replicationId !== primaryId)
        options.onPrimaryChanged(primaryId, state.replicationId);
      primaryId = state.replicationId;
    }
    return state;
  }
  const checkQuietly = () => void check().catch(options.onError);
  const timer = setInterval(checkQuietly, options.intervalMs);
  timer.unref();
  redis.on('ready', checkQuietly);
  return {
    check,
    last: () => last,
    stop() {
      clearInterval(timer);
      redis.off('ready', checkQuietly);
    },
  };
}
