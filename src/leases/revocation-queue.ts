import { Queue } from 'bullmq';
import type { RedisClient } from '../redis/connection';
import { REVOCATION_QUEUE, type RedisKeys } from '../redis/keys';

export interface RevocationJob {
  leaseId: string;
}

export interface RevocationQueueOptions {
  attempts: number;
  backoffMs: number;
}

/**
 * Two job ids per lease, both derived from it so queueing is idempotent: `expire-<lease>`, queued by the
 * worker's scheduler once the lease is due (issuance adds no job); `revoke-<lease>`, queued now (task
 * completed, admin, holder). Re-adding an id that is still queued is a no-op, which is what lets the
 * scheduler and the sweeper re-queue freely.
 */
export const expiryJobId = (leaseId: string) => `expire-${leaseId}`;
export const revokeJobId = (leaseId: string) => `revoke-${leaseId}`;

export type RevocationQueue = ReturnType<typeof createRevocationQueue>;

export function createRevocationQueue(
  connection: RedisClient,
  keys: RedisKeys,
  options: RevocationQueueOptions,
) {
  const queue = new Queue<RevocationJob>(REVOCATION_QUEUE, {
    connection,
    prefix: keys.bullPrefix(),
    defaultJobOptions: {
      attempts: options.attempts,
      backoff: { type: 'exponential', delay: options.backoffMs, jitter: 0.5 },
      // Finished jobs go at once: the lease record is the history, and a kept job id would block re-queueing.
      removeOnComplete: true,
      removeOnFail: true,
    },
  });

  const revokeNow = async (leaseIds: readonly string[]): Promise<void> => {
    for (let i = 0; i < leaseIds.length; i += 1000) {
      const batch = leaseIds.slice(i, i + 1000);
      await queue.addBulk(
        batch.map((leaseId) => ({
          name: 'revoke',
          data: { leaseId },
          opts: { jobId: revokeJobId(leaseId) },
        })),
      );
    }
  };

  /**
   * A job still held under the revoke id would swallow the add: one that finished but was kept (by another
   * configuration, or a hand-made job) is removed, one waiting out its retry backoff is run now. One waiting
   * or running already is left alone: it is the retry.
   */
  const clearWayFor = async (leaseId: string): Promise<void> => {
    const job = await queue.getJob(revokeJobId(leaseId));
    if (!job) return;
    const state = await job.getState();
    // Either may race with the job moving on (it ran, or it went): the add below covers both.
    if (state === 'failed' || state === 'completed') await job.remove().catch(() => undefined);
    else if (state === 'delayed') await job.promote().catch(() => undefined);
  };

  return {
    queue,
    revokeNow,
    /** On-call "retry now": the same `revoke-<lease>` job as any revocation, run now whatever an older one left. */
    async retryNow(leaseIds: readonly string[]): Promise<void> {
      for (let i = 0; i < leaseIds.length; i += 500)
        await Promise.all(leaseIds.slice(i, i + 500).map(clearWayFor));
      await revokeNow(leaseIds);
    },
    close: () => queue.close(),
  };
}
