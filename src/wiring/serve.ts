import { once } from 'node:events';
import type { Server } from 'node:http';
import type { Express } from 'express';
import { AuditTamperError, startAuditSealer } from '../audit/audit-sealer';
import { workloadIdWarnings } from '../policy/cedar-engine';
import type { RedisTarget } from '../config/redis-target';
import type { Config } from '../config/schema';
import type { VaultSettings } from '../config/vault-settings';
import { createApp } from '../http/app';
import { createHttpServer } from '../http/http-server';
import { throttledWarning } from '../observability/throttled-log';
import type { Logger } from '../observability/logger';
import { createTokenInspector } from '../providers/jwt/inspect-token';
import type { PrimaryWatch } from '../redis/primary-watch';
import type { SigningKeyRing } from '../signing/signing-keys';
import { createApiContext, type ApiContext } from './api-context';
import { createSharedContext, type SharedContext } from './shared-context';
import { StartupError } from './startup-error';

export interface RunningApi {
  /** The Express app, for reading its route table. */
  app: Express;
  server: Server;
  context: ApiContext;
  url: string;
  /** Never rejects: a failed reload is logged and the policies in force stay in force. */
  reloadPolicies(): Promise<void>;
  close(): Promise<void>;
}

/**
 * `tasklease serve`: the stateless HTTP API. Any number of replicas may run against one Redis. Given a
 * shared context (dev, tests) it builds its own on top and leaves the shared one to its owner.
 */
export async function startApi(options: {
  config: Config;
  redis: RedisTarget;
  signingKeys: SigningKeyRing;
  logger: Logger;
  host: string;
  port: number;
  vault?: VaultSettings | null;
  shared?: SharedContext;
}): Promise<RunningApi> {
  const shared = options.shared ?? (await createSharedContext({ ...options, autoPipelining: false }));
  try {
    return await listen(shared, options);
  } catch (error) {
    if (!options.shared) await shared.close();
    throw error;
  }
}

async function listen(shared: SharedContext, options: Parameters<typeof startApi>[0]): Promise<RunningApi> {
  const { logger } = options;
  const context = createApiContext(shared, options.signingKeys);
  const app = createApp({
    keys: context.keys,
    broker: context.deps,
    verify: context.verifier.verify,
    breakGlass: context.breakGlass,
    inspectToken: createTokenInspector({
      redis: context.redis,
      keys: context.keys,
      signingKeys: options.signingKeys,
      brokerIssuer: options.config.broker.issuer,
    }),
    redis: context.redis,
    primary: shared.primary,
    metrics: context.metrics,
    logger,
  });
  const dropped = throttledWarning(logger, 'connection refused: the API holds http.maxConnections');
  const server = createHttpServer(app, options.config.http, () => {
    context.metrics.connectionsDropped.inc();
    dropped({ maxConnections: options.config.http.maxConnections });
  }).listen(options.port, options.host);
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([error]) => {
      context.close();
      throw new StartupError(`cannot listen on ${options.host}:${options.port}: ${(error as Error).message}`);
    }),
  ]);
  const sealer = startSealer(context, shared.primary, options.config, options.signingKeys, logger);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const url = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`;
  logger.info({ url, policies: context.deps.policy.policyCount }, 'tasklease API listening');
  const warnAboutPolicies = () => {
    const issuers = options.config.issuers.map((issuer) => issuer.name);
    for (const warning of workloadIdWarnings(context.deps.policy.workloadIds, issuers))
      logger.warn({ warning }, 'suspect policy');
  };
  warnAboutPolicies();

  const reloadPolicies = async () => {
    try {
      const { policyCount } = await context.deps.policy.reload();
      logger.info({ policyCount }, 'policies reloaded');
      warnAboutPolicies();
    } catch (error) {
      // The policies in force stay in force: a bad edit never opens or closes the gate by accident.
      logger.error({ err: (error as Error).message }, 'policy reload failed; keeping the previous policies');
    }
  };

  return {
    app,
    server,
    context,
    url,
    reloadPolicies,
    async close() {
      // Requests in flight finish (up to 10 s); idle keep-alive connections close at once.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), 10_000);
      await closed;
      clearTimeout(force);
      // After the last request: what it audited is sealed before the process goes.
      await sealer.stop();
      context.close();
      if (!options.shared) await shared.close();
    },
  };
}

/** The audit sealer: chains and signs what this API appended; logs the chain's head once a minute. */
function startSealer(
  context: ApiContext,
  primary: PrimaryWatch,
  config: Config,
  signingKeys: SigningKeyRing,
  logger: Logger,
) {
  let lastHeadLoggedMs = 0;
  return startAuditSealer({
    redis: context.redis,
    keys: context.keys,
    audit: context.deps.audit,
    signingKeys: signingKeys,
    brokerIssuer: config.broker.issuer,
    intervalMs: config.audit.sealIntervalMs,
    nowMs: context.deps.nowMs,
    primary: {
      last: () => primary.last()?.replicationId ?? '',
      current: async () => (await primary.check()).replicationId,
    },
    onFailoverLoss: ({ kept, lost }) => {
      context.metrics.auditFailoverLosses.inc();
      logger.error(
        { keptSeq: kept.seq, keptId: kept.id, lostSeq: lost.seq, lostId: lost.id },
        'audit seals lost in a Redis primary change (a failover whose promoted replica never got them, or a restore from an older snapshot); sealing carries on from the newest seal it holds',
      );
    },
    onError: (error) => {
      if (!(error instanceof AuditTamperError))
        return logger.warn({ err: (error as Error).message }, 'audit sealing failed; retrying');
      context.metrics.auditSealingHalted.set(1);
      logger.error(
        { err: error.message },
        'audit log rewritten in Redis: sealing stopped; run tasklease audit verify, then restart the API',
      );
    },
    onSealed: (head) => {
      context.metrics.auditEventsSealed.inc(head.events);
      // The chain's head outside Redis, once a minute: `audit verify --expect seq:hash` checks a later log
      // still holds it (truncating the newest events with their seals is otherwise invisible).
      if (context.deps.nowMs() - lastHeadLoggedMs < 60_000) return;
      lastHeadLoggedMs = context.deps.nowMs();
      logger.info({ seq: head.seq, id: head.id, hash: head.hash }, 'audit sealed');
    },
  });
}
