import { UnrecoverableError, Worker } from 'bullmq';
import type { RedisClient } from '../redis/connection';
import { REVOCATION_QUEUE, type RedisKeys } from '../redis/keys';
import type { RevocationJob } from '../leases/revocation-queue';
import { RevocationRefusedError } from '../providers/provider';
import type { WorkerDeps } from '../usecases/deps';
import { settleLease } from '../usecases/settle-lease';

/**
 * Lock settings chosen so a worker killed with SIGKILL costs seconds, not minutes: its jobs' locks lapse
 * after LOCK_MS and the next stalled check (every STALLED_CHECK_MS, and at start) hands them to a live worker.
 * Revocation is idempotent, so a job run twice is harmless.
 */
export const LOCK_MS = 5_000;
export const STALLED_CHECK_MS = 2_500;

export function startRevocationWorker(
  deps: Pick<WorkerDeps, 'config' | 'leases' | 'providers' | 'events' | 'nowMs'>,
  connection: RedisClient,
  keys: RedisKeys,
) {
  const worker = new Worker<RevocationJob>(
    REVOCATION_QUEUE,
    async (job) => {
      const attempts = job.opts.attempts ?? 1;
      return settleLease(deps, job.data.leaseId, {
        final: job.attemptsMade + 1 >= attempts,
      }).catch((error: unknown) => {
        // The lease is already irrevocable; the sweeper, not this job's retries, tries it again later.
        throw error instanceof RevocationRefusedError ? new UnrecoverableError(error.message) : error;
      });
    },
    {
      connection,
      prefix: keys.bullPrefix(),
      concurrency: deps.config.revocation.concurrency,
      lockDuration: LOCK_MS,
      stalledInterval: STALLED_CHECK_MS,
      maxStalledCount: 10,
      // After a Redis error the fetch loop tries again in a second (BullMQ's default is 15 s): revocations
      // resume soon after a failover.
      runRetryDelay: 1_000,
      autorun: true,
    },
  );
  return worker;
}
