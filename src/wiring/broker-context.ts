import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createApprovalStore } from '../approvals/approval-store';
import { createAuditLog } from '../audit/audit-log';
import { createEntitlementStore } from '../entitlements/entitlement-store';
import { ConfigError } from '../config/load-config';
import type { Config } from '../config/schema';
import { BREAK_GLASS_ISSUER } from '../domain/types';
import type { VaultSettings } from '../config/vault-settings';
import { createBreakGlassVerifier, type VerifyBreakGlass } from '../identity/break-glass';
import { createExchangeReplay } from '../identity/exchange-replay';
import { createAttestationVerifier, type AttestationVerifier } from '../identity/verify-attestation';
import { RedisKeys } from '../leases/keys';
import { createLeaseStore } from '../leases/lease-store';
import {
  assertNoEviction,
  connectRedis,
  listpackValueTooSmall,
  RECOMMENDED_LISTPACK_VALUE,
  waitForRedis,
} from '../leases/redis';
import { createRevocationLog } from '../leases/revocation-log';
import { createRevocationQueue } from '../leases/revocation-queue';
import type { Logger } from '../observability/logger';
import {
  createApprovalNotifications,
  createIrrevocableAlerts,
  type ApprovalNotifications,
  type IrrevocableAlerts,
} from '../observability/alerts';
import { createMetrics, type Metrics } from '../observability/metrics';
import { createPolicyEngine, type PolicyEngine } from '../policy/cedar-engine';
import { createAwsClients } from '../providers/aws-sts/aws-clients';
import { createAwsStsProvider } from '../providers/aws-sts/aws-sts-provider';
import { createJwtProvider } from '../providers/jwt/jwt-provider';
import type { CredentialProvider, ProviderRegistry } from '../providers/provider';
import { createVaultClient } from '../providers/vault/vault-client';
import { createVaultProvider } from '../providers/vault/vault-provider';
import type { SigningKeyRing } from '../signing/signing-keys';
import { createTaskStore } from '../tasks/task-store';
import type { BrokerDeps, UseCaseEvents } from '../usecases/deps';

export interface BrokerContext {
  deps: BrokerDeps;
  keys: RedisKeys;
  redis: Redis;
  metrics: Metrics;
  /** Null in the worker: it verifies no identity. */
  verifier: AttestationVerifier | null;
  /** Null in the worker, like `verifier`. */
  breakGlass: VerifyBreakGlass | null;
  close(): Promise<void>;
}

/** Lease ids and task ids: 122 random bits (UUID v4), URL-safe, no dashes to trip anyone. */
const newId = () => randomUUID().replaceAll('-', '');

interface Outbound {
  alerts: IrrevocableAlerts | null;
  approvalNotifications: ApprovalNotifications | null;
}

function useCaseEvents(metrics: Metrics, logger: Logger, outbound: Outbound): UseCaseEvents {
  const { alerts, approvalNotifications } = outbound;
  return {
    irrevocable: (lease, reason, nowMs) =>
      alerts?.notify({
        leaseId: lease.id,
        grant: lease.grant,
        provider: lease.provider,
        task: lease.taskId,
        issuer: lease.issuer,
        subject: lease.subject,
        reason,
        atMs: nowMs,
      }),
    issued: (grant, provider, durationMs) => {
      metrics.issued.inc({ grant, provider });
      metrics.issuanceSeconds.observe({ provider }, durationMs / 1000);
    },
    denied: (action, reason, context) => {
      metrics.denials.inc({ action });
      logger.info({ action, reason, ...context }, 'policy denied');
    },
    settled: (lease, state, nowMs) => {
      metrics.settled.inc({ state, provider: lease.provider });
      if (state === 'expired')
        metrics.revocationLagSeconds.observe(Math.max(0, nowMs - lease.expiresAtMs) / 1000);
    },
    approvalRequested: (approval) => {
      metrics.approvals.inc({ kind: approval.kind, status: 'requested' });
      logger.info(
        { approvalId: approval.id, kind: approval.kind, grant: approval.grant, task: approval.taskId },
        'approval requested',
      );
      approvalNotifications?.requested(approval);
    },
    approvalSettled: (approval, status) => metrics.approvals.inc({ kind: approval.kind, status }),
    scheduleFailed: (leaseId, error) =>
      logger.warn({ leaseId, err: error }, 'expiry job not queued; the sweeper will act'),
    revocationFailed: (leaseId, provider, error, final) => {
      metrics.revocationFailures.inc({ provider, final: String(final) });
      logger.warn(
        { leaseId, provider, error, final },
        final ? 'revocation failed: lease is irrevocable' : 'revocation attempt failed',
      );
    },
  };
}

function createVerifier(config: Config, metrics: Metrics, logger: Logger, nowMs: () => number) {
  return createAttestationVerifier(config.issuers, {
    onReject: (reason, context) => {
      metrics.rejectedTokens.inc({ issuer: context.issuer ?? 'unknown' });
      logger.info(
        { reason, issuer: context.issuer, tokenSha256: context.tokenSha256 },
        'identity token rejected',
      );
    },
    onKeyError: (issuer, error) =>
      logger.warn({ issuer, err: (error as Error).message }, 'issuer JWKS refresh failed'),
    nowMs,
  });
}

/** Break-glass tokens: every refusal is a warning (someone holds a token-shaped string), never with the token. */
function createBreakGlass(config: Config, metrics: Metrics, logger: Logger, nowMs: () => number) {
  for (const entry of config.breakGlass) {
    if (entry.expiresAt && Date.parse(entry.expiresAt) <= nowMs())
      logger.warn({ breakGlass: entry.name, expiresAt: entry.expiresAt }, 'break-glass entry has expired');
  }
  return createBreakGlassVerifier(config.breakGlass, {
    onReject: (reason, name) => {
      metrics.rejectedTokens.inc({ issuer: BREAK_GLASS_ISSUER });
      logger.warn({ reason, breakGlass: name }, 'break-glass token rejected');
    },
    nowMs,
  });
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

/** The worker decides nothing: fails closed should anything there ever ask. */
const NO_POLICIES: PolicyEngine = {
  policyCount: 0,
  evaluate: () => ({ allowed: false, policyIds: [], reason: 'no policies are loaded in the worker' }),
  reload: () => ({ policyCount: 0 }),
  readsContext: () => false,
};

/**
 * Builds every capability from config, wired by hand. Each process (serve, worker, dev) builds one;
 * nothing here is a module-level singleton.
 */
export async function createBrokerContext(options: {
  config: Config;
  redisUrl: string;
  signingKeys: SigningKeyRing | null;
  logger: Logger;
  /** Resolved by resolveVaultSettings; needed when a grant uses Vault. */
  vault?: VaultSettings | null;
  nowMs?: () => number;
}): Promise<BrokerContext> {
  const { config, logger } = options;
  const nowMs = options.nowMs ?? Date.now;
  // The worker (no signing keys) only revokes: it fetches no issuer keys and loads no policies.
  const servesApi = options.signingKeys !== null;
  const redis = connectRedis(options.redisUrl, { name: 'tasklease', autoPipelining: !servesApi });
  redis.on('error', (error) => logger.warn({ err: error.message }, 'redis connection error'));
  await waitForRedis(redis);
  await assertNoEviction(redis);
  const listpackValue = await listpackValueTooSmall(redis);
  if (listpackValue !== null) {
    logger.warn(
      { current: listpackValue, recommended: RECOMMENDED_LISTPACK_VALUE },
      'Redis hash-max-listpack-value is small: each lease costs ~400 B more (see docs/architecture.md)',
    );
  }

  const keys = new RedisKeys(config.broker.redisPrefix);
  const leases = createLeaseStore(redis, keys, { retentionSeconds: config.broker.retentionSeconds });
  const metrics = createMetrics({ unsettled: leases.countUnsettled, irrevocable: leases.countIrrevocable });
  const queue = createRevocationQueue(redis, keys, config.revocation);
  const jwt = createJwtProvider({
    redis,
    keys,
    signingKeys: options.signingKeys,
    brokerIssuer: config.broker.issuer,
  });
  const awsClients = createAwsClients();
  const providers = new Map<CredentialProvider['kind'], CredentialProvider>([
    ['jwt', jwt],
    ['aws-sts', createAwsStsProvider({ config, redis, keys, clients: awsClients })],
  ]);
  const vault = vaultClient(config, options.vault, logger);
  if (vault) providers.set('vault', createVaultProvider(vault));
  const verifier = servesApi ? createVerifier(config, metrics, logger, nowMs) : null;
  const breakGlass = servesApi ? createBreakGlass(config, metrics, logger, nowMs) : null;
  const alerts = config.alerts.irrevocableWebhook
    ? createIrrevocableAlerts({
        url: config.alerts.irrevocableWebhook,
        debounceMs: config.alerts.debounceSeconds * 1000,
        brokerIssuer: config.broker.issuer,
        logger,
        onUndelivered: () => metrics.webhookUndelivered.inc({ webhook: 'irrevocable' }),
      })
    : null;
  const approvalNotifications = config.approvals.webhook
    ? createApprovalNotifications({
        url: config.approvals.webhook,
        brokerIssuer: config.broker.issuer,
        logger,
        onUndelivered: () => metrics.webhookUndelivered.inc({ webhook: 'approvals' }),
      })
    : null;

  const deps: BrokerDeps = {
    config,
    tasks: createTaskStore(redis, keys, { retentionSeconds: config.broker.retentionSeconds }),
    leases,
    queue,
    revocations: createRevocationLog(redis, keys),
    policy: servesApi ? createPolicyEngine(config.policies) : NO_POLICIES,
    providers: providers as ProviderRegistry,
    audit: createAuditLog(redis, keys),
    approvals: createApprovalStore(redis, keys, { retentionSeconds: config.broker.retentionSeconds }),
    entitlements: createEntitlementStore(redis, keys, { retentionSeconds: config.broker.retentionSeconds }),
    exchangeReplay: createExchangeReplay(redis, keys),
    // The worker holds no signing keys; nothing it runs signs.
    signingKeys: options.signingKeys as SigningKeyRing,
    events: useCaseEvents(metrics, logger, { alerts, approvalNotifications }),
    nowMs,
    newId,
  };

  return {
    deps,
    keys,
    redis,
    metrics,
    verifier,
    breakGlass,
    async close() {
      verifier?.close();
      await Promise.all([alerts?.flush(), approvalNotifications?.flush()]);
      // With Redis gone, stop reconnecting first so closing does not wait on it.
      if (redis.status !== 'ready') redis.disconnect();
      await queue.close();
      awsClients.destroy();
      vault?.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
