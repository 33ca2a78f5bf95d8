import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';
import type { LeaseStore } from '../leases/lease-store';
import { expiryJobId, revokeJobId, type RevocationQueue } from '../leases/revocation-queue';

const BATCH = 1000;
const MAX_PAGES = 10;

export interface SweeperDeps {
  redis: RedisClient;
  keys: RedisKeys;
  leases: Pick<LeaseStore, 'dueIds' | 'purgeSettled'>;
  queue: Pick<RevocationQueue, 'queue'>;
  /** Writes down approvals past their deadline (expire-approvals.ts). */
  expireApprovals: (nowMs: number) => Promise<number>;
  graceMs: number;
  intervalMs: number;
  nowMs: () => number;
  onError: (error: unknown) => void;
}

/**
 * The authority over revocation: every unsettled lease sits in the due index, and whatever is overdue by
 * more than the grace period gets a job again — whether its job was never scheduled, lost, exhausted, or it
 * is an irrevocable lease whose retry time has come. The job id matches the one a live job would have, so a
 * job that is still queued is left alone (adding it again is a no-op in BullMQ).
 */
export async function sweepOnce(deps: SweeperDeps): Promise<number> {
  const nowMs = deps.nowMs();
  let requeued = 0;
  // Up to MAX_PAGES pages a tick: a burst of lost jobs is re-queued in seconds, a steady state costs one read.
  for (let page = 0; page < MAX_PAGES; page++) {
    const ids = await deps.leases.dueIds(nowMs - deps.graceMs, BATCH, page * BATCH);
    if (ids.length > 0) await requeue(deps, ids);
    requeued += ids.length;
    if (ids.length < BATCH) break;
  }
  await deps.expireApprovals(nowMs);
  // Purge keeps up with any settlement rate: a full batch means there may be more.
  for (let page = 0; page < MAX_PAGES; page++) {
    if ((await deps.leases.purgeSettled(nowMs, BATCH)) < BATCH) break;
  }
  return requeued;
}

/** Queues each lease's job: `revoke-<id>` for one already revoking or irrevocable, else `expire-<id>`. */
export async function requeue(
  deps: Pick<SweeperDeps, 'redis' | 'keys' | 'queue'>,
  ids: readonly string[],
): Promise<void> {
  const pipeline = deps.redis.pipeline();
  for (const id of ids) pipeline.hget(deps.keys.lease(id), 'state');
  const states = ((await pipeline.exec()) ?? []).map(([, state]) => state as string | null);
  const jobs = ids.map((leaseId, index) => {
    // An irrevocable lease gets a revoke job: its expiry job may still be waiting for a far-off expiry (a
    // lease revoked early whose revocation failed), and re-adding that id would be a no-op until then.
    const revoking = states[index] === 'revoking' || states[index] === 'irrevocable';
    return {
      name: revoking ? 'revoke' : 'expire',
      data: { leaseId },
      opts: { jobId: revoking ? revokeJobId(leaseId) : expiryJobId(leaseId) },
    };
  });
  await deps.queue.queue.addBulk(jobs);
}

/** After consecutive failures (Redis down, a failover) the sweeper waits longer, up to this, between tries. */
const MAX_BACKOFF_MS = 30_000;

/**
 * Sweeps every `intervalMs`; while sweeps fail it backs off (doubling, up to 30 s) so an outage costs a
 * log line now and then, not one a second from every worker. The first sweep after recovery resets it.
 */
export function startSweeper(deps: SweeperDeps): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    const delayMs = Math.min(MAX_BACKOFF_MS, deps.intervalMs * 2 ** failures);
    timer = setTimeout(tick, failures === 0 ? deps.intervalMs : delayMs);
  };
  const tick = () => {
    running = sweepOnce(deps)
      .then(
        () => (failures = 0),
        (error: unknown) => {
          failures = Math.min(failures + 1, 16);
          deps.onError(error);
        },
      )
      .finally(() => {
        if (!stopped) schedule();
      });
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
