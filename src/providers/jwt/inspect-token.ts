import type { RedisClient } from '../../redis/connection';
import { createLocalJWKSet, jwtVerify, type JWTPayload } from 'jose';
import type { RedisKeys } from '../../redis/keys';
import type { SigningKeyRing } from '../../signing/signing-keys';

export type TokenInspection = { active: false } | { active: true; payload: JWTPayload; leaseId: string };

/**
 * Is a broker-issued JWT live right now? Signature by one of our keys, not expired, its `jti` not on the
 * revocation list. Anything else — garbage, foreign, expired, revoked — is simply inactive (RFC 7662 §2.2).
 */
export function createTokenInspector(deps: {
  redis: RedisClient;
  keys: RedisKeys;
  signingKeys: SigningKeyRing;
  brokerIssuer: string;
}) {
  const getKey = createLocalJWKSet(deps.signingKeys.jwks);
  const algorithms = [...new Set(deps.signingKeys.all.map((key) => key.alg))];
  return async (token: string): Promise<TokenInspection> => {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        issuer: deps.brokerIssuer,
        algorithms,
        typ: 'at+jwt',
        requiredClaims: ['jti', 'exp'],
      }));
    } catch {
      return { active: false };
    }
    const leaseId = payload.jti as string;
    if ((await deps.redis.exists(deps.keys.revokedJti(leaseId))) === 1) return { active: false };
    return { active: true, payload, leaseId };
  };
}

export type TokenInspector = ReturnType<typeof createTokenInspector>;
