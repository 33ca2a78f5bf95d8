import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import express from 'express';
import { AuditSinkStoppedError, startAuditFileSink, type AuditFileSink } from '../audit/audit-file-sink';
import type { Config } from '../config/schema';
import type { VaultSettings } from '../config/vault-settings';
import { systemRoutes } from '../http/routes/system';
import { startRevocationWorker } from '../jobs/revocation-worker';
import { startSweeper } from '../jobs/sweeper';
import { expireApprovals } from '../usecases/expire-approvals';
import { connectRedis } from '../leases/redis';
import type { Logger } from '../observability/logger';
import { createBrokerContext, type BrokerContext } from './broker-context';

export interface RunningWorker {
  context: BrokerContext;
  server: Server | null;
  close(): Promise<void>;
}

/** `tasklease worker`: revocation jobs and the sweeper, plus /healthz, /readyz and /metrics on its own port. */
export async function startWorker(options: {
  config: Config;
  redisUrl: string;
  logger: Logger;
  host: string;
  port: number | null;
  vault?: VaultSettings | null;
  context?: BrokerContext;
}): Promise<RunningWorker> {
  const { config, logger } = options;
  const context = options.context ?? (await createBrokerContext({ ...options, signingKeys: null }));
  // First: a file it must not write to stops start-up before any job runs.
  const fileSink: AuditFileSink | null = config.audit.file
    ? await startAuditFileSink({
        path: config.audit.file,
        audit: context.deps.audit,
        brokerIssuer: config.broker.issuer,
        intervalMs: config.audit.sealIntervalMs,
        nowMs: context.deps.nowMs,
        onError: (error) =>
          error instanceof AuditSinkStoppedError
            ? logger.error({ err: error.message }, 'audit file sink stopped: the log in Redis was rewritten')
            : logger.warn({ err: (error as Error).message }, 'audit file sink failed; retrying'),
        onWarning: (message) => logger.warn({ detail: message }, 'audit file sink'),
      })
    : null;

  const bullConnection = connectRedis(options.redisUrl, { forBullWorker: true, name: 'tasklease-worker' });
  const worker = startRevocationWorker(context.deps, bullConnection, context.keys);
  worker.on('error', (error) => logger.warn({ err: error.message }, 'revocation worker error'));
  const sweeper = startSweeper({
    redis: context.redis,
    keys: context.keys,
    leases: context.deps.leases,
    queue: context.deps.queue,
    expireApprovals: (nowMs) => expireApprovals(context.deps, nowMs),
    graceMs: config.revocation.sweepGraceMs,
    intervalMs: config.revocation.sweepIntervalMs,
    nowMs: context.deps.nowMs,
    onError: (error) => logger.warn({ err: (error as Error).message }, 'sweep failed'),
  });

  let server: Server | null = null;
  if (options.port !== null) {
    const app = express();
    app.disable('x-powered-by');
    app.use(systemRoutes({ redis: context.redis, metrics: context.metrics }));
    server = createServer(app).listen(options.port, options.host);
    await once(server, 'listening');
  }
  await worker.waitUntilReady();
  logger.info({ concurrency: config.revocation.concurrency }, 'tasklease worker running');

  return {
    context,
    server,
    async close() {
      await sweeper.stop();
      await worker.close();
      await fileSink?.stop();
      await bullConnection.quit().catch(() => bullConnection.disconnect());
      if (server) await new Promise<void>((resolve) => server?.close(() => resolve()));
      if (!options.context) await context.close();
    },
  };
}
