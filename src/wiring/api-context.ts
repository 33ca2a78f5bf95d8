import { createRefusalAudit } from '../audit/refusal-audit';
import { BREAK_GLASS_ISSUER } from '../domain/types';
import type { Config } from '../config/schema';
import { createBreakGlassVerifier, type VerifyBreakGlass } from '../identity/break-glass';
import { createExchangeReplay } from '../identity/exchange-replay';
import { createAttestationVerifier, type AttestationVerifier } from '../identity/verify-attestation';
import type { Logger } from '../observability/logger';
import type { Metrics } from '../observability/metrics';
import { createPolicy } from '../policy/policy-threads';
import { createJwtProvider } from '../providers/jwt/jwt-provider';
import type { CredentialProvider, ProviderRegistry } from '../providers/provider';
import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';
import type { SigningKeyRing } from '../signing/signing-keys';
import type { BrokerDeps } from '../usecases/deps';
import type { SharedContext } from './shared-context';

/** What `serve` (and the API half of `dev`) holds: the shared stores plus identity, policy and signing. */
export interface ApiContext {
  shared: SharedContext;
  deps: BrokerDeps;
  keys: RedisKeys;
  redis: RedisClient;
  metrics: Metrics;
  verifier: AttestationVerifier;
  breakGlass: VerifyBreakGlass;
  signingKeys: SigningKeyRing;
  close(): void;
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

/**
 * The API's context over the shared one: the attestation verifier (local JWKS files are read now, remote
 * ones fetched in the background), the policy engine (a policy that does not parse stops start-up), the
 * providers with the JWT minter, which alone holds the signing keys.
 */
export function createApiContext(shared: SharedContext, signingKeys: SigningKeyRing): ApiContext {
  const { config, logger, metrics, redis, keys } = shared;
  const { nowMs } = shared.deps;
  const jwt = createJwtProvider({
    revoker: shared.jwtRevoker,
    signingKeys,
    brokerIssuer: config.broker.issuer,
  });
  const providers: ProviderRegistry = new Map<CredentialProvider['kind'], CredentialProvider>([
    ['jwt', jwt],
    ...shared.backends.map((backend) => [backend.kind, backend] as const),
  ]);
  const verifier = createVerifier(config, metrics, logger, nowMs);
  const policy = createPolicy(config.policies, {
    threads: config.broker.policyThreads,
    onThreadExit: (error) => {
      metrics.policyThreadExits.inc();
      logger.error(
        { err: error.message },
        'policy thread died: deciding on the event loop until it is replaced',
      );
    },
  });
  return {
    shared,
    deps: {
      ...shared.deps,
      policy,
      providers,
      exchangeReplay: createExchangeReplay(redis, keys),
      signingKeys,
      refusals: createRefusalAudit({
        redis,
        keys,
        audit: shared.deps.audit,
        perMinute: config.broker.refusalsPerMinutePerIdentity,
        onUnaudited: (type) => metrics.refusalsUnaudited.inc({ type }),
      }),
    },
    keys,
    redis,
    metrics,
    verifier,
    breakGlass: createBreakGlass(config, metrics, logger, nowMs),
    signingKeys,
    close: () => {
      verifier.close();
      void policy.close();
    },
  };
}
