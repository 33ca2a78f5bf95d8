import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import express from 'express';
import type { RedisTarget } from '../config/redis-target';
import type { Config } from '../config/schema';
import type { VaultSettings } from '../config/vault-settings';
import { systemRoutes } from '../http/routes/system';
import { startRevocationWorker } from '../jobs/revocation-worker';
import { startScheduler } from '../jobs/scheduler';
import { startSweeper } from '../jobs/sweeper';
import type { Logger } from '../observability/logger';
import { throttledWarning } from '../observability/throttled-log';
import { closeRedis, connectRedis } from '../redis/connection';
import { expireApprovals } from '../usecases/expire-approvals';
import { startAuditFile } from './audit-file';
import { createSharedContext, type SharedContext } from './shared-context';
import { StartupError } from './startup-error';
import { createWorkerContext, type WorkerContext } from './worker-context';

export interface RunningWorker {
  context: WorkerContext;
  server: Server | null;
  close(): Promise<void>;
}

interface WorkerOptions {
  config: Config;
  redis: RedisTarget;
  logger: Logger;
  host: string;
  port: number | null;
  vault?: VaultSettings | null;
  shared?: SharedContext;
}

/**
 * `tasklease worker`: revocation jobs and the sweeper, plus /healthz, /readyz and /metrics on its own port.
 * Start-up completes or throws, with whatever it had started closed again.
 */
export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  const shared = options.shared ?? (await createSharedContext({ ...options, autoPipelining: true }));
  const context = createWorkerContext(shared);
  const started: { close(): Promise<void> }[] = [];
  const closeAll = async () => {
    for (const part of started.reverse()) await part.close();
    if (!options.shared) await shared.close();
  };
  let server: Server | null;
  try {
    server = await startParts(context, options, started);
  } catch (error) {
    await closeAll().catch(() => undefined);
    throw error;
  }
  options.logger.info({ concurrency: options.config.revocation.concurrency }, 'tasklease worker running');
  return { context, server, close: closeAll };
}

/** Each part, in order, pushed onto `started` so a failure further on closes it again. */
async function startParts(
  context: WorkerContext,
  options: WorkerOptions,
  started: { close(): Promise<void> }[],
): Promise<Server | null> {
  const { config, logger } = options;
  const { shared, deps } = context;
  // First: a file it must not write to stops start-up before any job runs.
  if (config.audit.file) started.push(await startAuditFile(context, config, logger));

  const bullConnection = connectRedis(options.redis, { forBullWorker: true, name: 'tasklease-worker' });
  started.push({ close: () => closeRedis(bullConnection) });
  const worker = startRevocationWorker(deps, bullConnection, shared.keys);
  const warn = throttledWarning(logger, 'revocation worker error');
  worker.on('error', (error) => warn({ err: error.message }));
  started.push({ close: () => worker.close() });
  const schedulerWarning = throttledWarning(logger, 'revocation scheduling failed; retrying');
  const sweeper = startSweeper({
    redis: shared.redis,
    keys: shared.keys,
    leases: deps.leases,
    queue: deps.queue,
    expireApprovals: (nowMs) => expireApprovals(deps, nowMs),
    graceMs: config.revocation.sweepGraceMs,
    intervalMs: config.revocation.sweepIntervalMs,
    nowMs: deps.nowMs,
    onError: (error) => logger.warn({ err: (error as Error).message }, 'sweep failed'),
  });
  started.push({ close: () => sweeper.stop() });
  const scheduler = startScheduler({
    redis: shared.redis,
    keys: shared.keys,
    leases: deps.leases,
    queue: deps.queue,
    requeueAfterMs: Math.max(config.revocation.sweepGraceMs, 1000),
    intervalMs: config.revocation.scheduleIntervalMs,
    nowMs: deps.nowMs,
    onError: (error) => schedulerWarning({ err: (error as Error).message }),
  });
  started.push({ close: () => scheduler.stop() });

  let server: Server | null = null;
  if (options.port !== null) {
    const app = express();
    app.disable('x-powered-by');
    app.use(systemRoutes({ primary: shared.primary, metrics: shared.metrics }));
    const listening = createServer(app).listen(options.port, options.host);
    server = listening;
    await Promise.race([
      once(listening, 'listening'),
      once(listening, 'error').then(([error]) => {
        throw new StartupError(
          `cannot listen on ${options.host}:${options.port}: ${(error as Error).message}`,
        );
      }),
    ]);
    started.push({ close: () => new Promise<void>((resolve) => listening.close(() => resolve())) });
  }
  await worker.waitUntilReady();
  return server;
}
