import type { LeaseStore } from '../leases/lease-store';
import type { RevocationQueue } from '../leases/revocation-queue';
import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';
import { requeue } from './sweeper';

const BATCH = 1000;
const MAX_PAGES = 20;

export interface SchedulerDeps {
  redis: RedisClient;
  keys: RedisKeys;
  leases: Pick<LeaseStore, 'claimDue'>;
  queue: Pick<RevocationQueue, 'queue'>;
  /** A claimed lease comes due again this long after, should its job be lost. */
  requeueAfterMs: number;
  intervalMs: number;
  nowMs: () => number;
  onError: (error: unknown) => void;
}

/**
 * Moves the leases due now into revocation jobs, in bulk: issuance adds no job, the due index holds every
 * lease's expiry. Each tick claims what is due (claimDue: taken off the front and made due again after
 * `requeueAfterMs`) and adds their jobs with addBulk under ids derived from the lease, so a lease claimed
 * twice gets one job. The sweeper stays the authority: it re-queues whatever is overdue by its grace, so a
 * stopped scheduler delays revocations by that grace, and loses none.
 */
export async function scheduleOnce(deps: SchedulerDeps): Promise<number> {
  let moved = 0;
  for (let page = 0; page < MAX_PAGES; page++) {
    const nowMs = deps.nowMs();
    const ids = await deps.leases.claimDue(nowMs, nowMs + deps.requeueAfterMs, BATCH);
    if (ids.length > 0) await requeue(deps, ids);
    moved += ids.length;
    if (ids.length < BATCH) break;
  }
  return moved;
}

/** Runs scheduleOnce every `intervalMs` (at once again while a tick fills its pages); errors are reported. */
export function startScheduler(deps: SchedulerDeps): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    running = scheduleOnce(deps)
      .then(
        (moved) => moved >= BATCH * MAX_PAGES,
        (error: unknown) => {
          deps.onError(error);
          return false;
        },
      )
      .then((more) => {
        if (!stopped) timer = setTimeout(tick, more ? 0 : deps.intervalMs);
      });
  };
  timer = setTimeout(tick, deps.intervalMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
