import { newId, newLeaseId } from '../domain/ids';
import { createApprovalStore } from '../approvals/approval-store';
import { createAuditLog } from '../audit/audit-log';
import { ConfigError } from '../config/load-config';
import { describeRedisTarget, type RedisTarget } from '../config/redis-target';
import type { Config } from '../config/schema';
import type { VaultSettings } from '../config/vault-settings';
import { createEntitlementStore } from '../entitlements/entitlement-store';
import { createLeaseStore } from '../leases/lease-store';
import { createRevocationLog } from '../leases/revocation-log';
import { createRevocationQueue } from '../leases/revocation-queue';
import { createApprovalNotifications, createIrrevocableAlerts } from '../observability/alerts';
import type { Logger } from '../observability/logger';
import { createMetrics, type Metrics } from '../observability/metrics';
import { createAwsClients } from '../providers/aws-sts/aws-clients';
import { createAwsStsProvider } from '../providers/aws-sts/aws-sts-provider';
import { createJwtRevoker } from '../providers/jwt/jwt-provider';
import type { CredentialProvider, CredentialRevoker } from '../providers/provider';
import { createVaultClient } from '../providers/vault/vault-client';
import { createVaultProvider } from '../providers/vault/vault-provider';
import {
  closeRedis,
  connectRedis,
  disconnectRedis,
  waitForReady,
  type RedisClient,
} from '../redis/connection';
import { createDurableWrites, type DurableWrites } from '../redis/durable-writes';
import { RedisKeys, resolveKeyPrefix } from '../redis/keys';
import { watchPrimary, type PrimaryWatch } from '../redis/primary-watch';
import {
  assertPrimariesUsable,
  RECOMMENDED_LISTPACK_VALUE,
  smallListpackValues,
} from '../redis/requirements';
import { createTaskStore } from '../tasks/task-store';
import type { SharedDeps } from '../usecases/deps';
import { StartupError } from './startup-error';
import { useCaseEvents } from './use-case-events';

/** Redis must answer within this at start-up; with the checks after it, a process that cannot start exits ≤ 15 s. */
const REDIS_READY_MS = 10_000;

/** What the API and the worker share: one Redis connection, the stores over it, metrics, the backends. */
export interface SharedContext {
  config: Config;
  logger: Logger;
  redisTarget: RedisTarget;
  keys: RedisKeys;
  redis: RedisClient;
  durable: DurableWrites;
  primary: PrimaryWatch;
  metrics: Metrics;
  deps: SharedDeps;
  /** The backends that mint and revoke alike (aws-sts, vault); the JWT half is per process. */
  backends: CredentialProvider[];
  jwtRevoker: CredentialRevoker;
  close(): Promise<void>;
}

/** The Vault client, when a grant uses Vault; its renewal of the broker's own token starts here. */
function vaultClient(config: Config, settings: VaultSettings | null | undefined, logger: Logger) {
  const grants = Object.values(config.grants).filter((grant) => grant.provider === 'vault');
  if (grants.length === 0) return null;
  if (!settings) throw new ConfigError('vault grants are configured but no Vault connection was given');
  const longestGrantSeconds = Math.max(...grants.map((grant) => grant.maxTtlSeconds));
  const client = createVaultClient(settings, logger, { longestGrantSeconds });
  client.start();
  return client;
}

/**
 * Connects to Redis and checks it can hold leases, or throws StartupError naming the address: unreachable
 * within 10 s, a replica, an evicting primary (every primary of a cluster is checked), a cluster prefix
 * without a hash tag. Nothing is left connected when it throws, so the process can exit.
 */
async function connectChecked(config: Config, target: RedisTarget, logger: Logger, autoPipelining: boolean) {
  const where = describeRedisTarget(target);
  let prefix: string;
  try {
    prefix = resolveKeyPrefix(config.broker.redisPrefix, target.kind);
  } catch (error) {
    throw new StartupError(`cannot use Redis at ${where}: ${(error as Error).message}`);
  }
  const redis = connectRedis(target, { name: 'tasklease', autoPipelining });
  try {
    await waitForReady(redis, REDIS_READY_MS).catch((error: Error) => {
      throw new StartupError(
        `cannot reach Redis at ${where} within ${REDIS_READY_MS / 1000} s: ${error.message}`,
      );
    });
    await assertPrimariesUsable(redis).catch((error: Error) => {
      throw new StartupError(`cannot use Redis at ${where}: ${error.message}`);
    });
  } catch (error) {
    disconnectRedis(redis);
    throw error;
  }
  for (const { address, value } of await smallListpackValues(redis))
    logger.warn(
      { address, current: value, recommended: RECOMMENDED_LISTPACK_VALUE },
      'Redis hash-max-listpack-value is small: an STS or Vault lease costs ~700 B more (see docs/architecture.md)',
    );
  if (target.kind !== 'single' && config.broker.replicaAcks === 0)
    logger.warn(
      { redis: where },
      'broker.replicaAcks is 0 on a replicated Redis: a failover can lose writes no replica had (see docs/architecture.md)',
    );
  redis.on('error', (error: Error) => logger.warn({ err: error.message }, 'redis connection error'));
  return { redis, keys: new RedisKeys(prefix) };
}

export async function createSharedContext(options: {
  config: Config;
  redis: RedisTarget;
  logger: Logger;
  vault?: VaultSettings | null;
  nowMs?: () => number;
  /** The API turns it off (it cost CPU and tail latency at 1,000/s); the worker's many jobs gain from it. */
  autoPipelining: boolean;
}): Promise<SharedContext> {
  const { config, logger } = options;
  const nowMs = options.nowMs ?? Date.now;
  const { redis, keys } = await connectChecked(config, options.redis, logger, options.autoPipelining);
  const { broker } = config;
  const durable = createDurableWrites(redis, {
    routingKey: keys.due(),
    replicaAcks: broker.replicaAcks,
    replicaAckTimeoutMs: broker.replicaAckTimeoutMs,
    replaySeconds: broker.failoverReplaySeconds,
    replayMaxWrites: broker.failoverReplayMaxWrites,
    nowMs,
    onNotReplicated: (acknowledged, wanted) => {
      metrics.notReplicated.inc();
      logger.warn({ acknowledged, wanted }, 'Redis replicas did not confirm a write in time');
    },
  });
  const leases = createLeaseStore(redis, keys, durable, { retentionSeconds: broker.retentionSeconds });
  const metrics = createMetrics({ unsettled: leases.countUnsettled, irrevocable: leases.countIrrevocable });
  const primary = watchPrimary(redis, {
    routingKey: keys.due(),
    intervalMs: 1000,
    // Writes a replica acknowledged may be missing from the one promoted: this process still holds them.
    onPrimaryChanged: (previousId, currentId) => {
      metrics.primaryChanges.inc();
      logger.warn(
        { previousId, currentId, kept: durable.kept() },
        'Redis primary changed: re-applying recent writes',
      );
      durable.replay().then(
        ({ replayed, reapplied }) => {
          metrics.writesReapplied.inc(reapplied);
          logger.warn({ replayed, reapplied }, 'recent writes re-applied to the new Redis primary');
        },
        (error: Error) =>
          logger.error({ err: error.message }, 're-applying writes to the new primary failed'),
      );
    },
    onProblem: (message) => logger.warn({ problem: message }, 'Redis cannot take writes now: not ready'),
    onError: (error) => logger.warn({ err: (error as Error).message }, 'Redis primary check failed'),
  });
  // The first read now: a primary change from here on is seen, however soon it comes.
  await primary.check();
  const queue = createRevocationQueue(redis, keys, config.revocation);
  const alerts = config.alerts.irrevocableWebhook
    ? createIrrevocableAlerts({
        url: config.alerts.irrevocableWebhook,
        debounceMs: config.alerts.debounceSeconds * 1000,
        brokerIssuer: broker.issuer,
        logger,
        onUndelivered: () => metrics.webhookUndelivered.inc({ webhook: 'irrevocable' }),
      })
    : null;
  const approvalNotifications = config.approvals.webhook
    ? createApprovalNotifications({
        url: config.approvals.webhook,
        brokerIssuer: broker.issuer,
        logger,
        onUndelivered: () => metrics.webhookUndelivered.inc({ webhook: 'approvals' }),
      })
    : null;
  const awsClients = createAwsClients();
  const vault = vaultClient(config, options.vault, logger);
  const backends = [createAwsStsProvider({ config, redis, keys, clients: awsClients })];
  if (vault) backends.push(createVaultProvider(vault));
  const retention = { retentionSeconds: broker.retentionSeconds };

  return {
    config,
    logger,
    redisTarget: options.redis,
    keys,
    redis,
    durable,
    primary,
    metrics,
    backends,
    jwtRevoker: createJwtRevoker({ redis, keys }),
    deps: {
      config,
      tasks: createTaskStore(redis, keys, durable, {
        ...retention,
        maxOpenTasksPerIdentity: broker.maxOpenTasksPerIdentity,
      }),
      leases,
      queue,
      revocations: createRevocationLog(redis, keys),
      audit: createAuditLog(redis, keys, durable),
      approvals: createApprovalStore(redis, keys, retention),
      entitlements: createEntitlementStore(redis, keys, retention),
      events: useCaseEvents(metrics, logger, { alerts, approvalNotifications }),
      nowMs,
      newId,
      newLeaseId,
    },
    async close() {
      primary.stop();
      await Promise.all([alerts?.flush(), approvalNotifications?.flush()]);
      // With Redis gone, stop reconnecting first so closing does not wait on it.
      if (redis.status !== 'ready') disconnectRedis(redis);
      await queue.close();
      awsClients.destroy();
      vault?.close();
      await closeRedis(redis);
    },
  };
}
