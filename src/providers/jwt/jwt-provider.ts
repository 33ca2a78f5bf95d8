import { CompactSign } from 'jose';
import type { RedisClient } from '../../redis/connection';
import type { RedisKeys } from '../../redis/keys';
import type { CredentialProvider, CredentialRevoker } from '../provider';
import type { SigningKeyRing } from '../../signing/signing-keys';

/**
 * Revoking a broker-signed JWT needs only Redis: the token id goes on the revocation list. The worker holds
 * this half alone, never the signing keys.
 */
export function createJwtRevoker(deps: { redis: RedisClient; keys: RedisKeys }): CredentialRevoker {
  const { redis, keys } = deps;
  return {
    kind: 'jwt',
    revocationSemantics:
      'The token id is put on the revocation list: introspection answers inactive at once. A resource server ' +
      'that only verifies the signature offline accepts the token until its exp.',

    async revoke(lease, { nowMs }) {
      const remainingMs = lease.expiresAtMs - nowMs;
      // Past exp the token is dead by its own claim: every verifier refuses it without our help.
      if (remainingMs <= 0) return { revocation: 'expired-at-source' };
      // A lease written before the handle was left empty carries the token id as handle.jti (the same id).
      await redis.set(keys.revokedJti(lease.handle.jti ?? lease.id), '1', 'PX', remainingMs + 60_000);
      return { revocation: 'jwt-denylisted' };
    },
  };
}

const encoder = new TextEncoder();

/** Broker-signed access tokens (the API's provider). `jti` is the lease id, so a token always leads back to its lease. */
export function createJwtProvider(deps: {
  revoker: CredentialRevoker;
  signingKeys: SigningKeyRing;
  brokerIssuer: string;
}): CredentialProvider {
  const { revoker, signingKeys, brokerIssuer } = deps;
  return {
    ...revoker,
    async mint({ leaseId, grant, identity, task, issuedAtMs, expiresAtMs, scopes }) {
      if (grant.provider !== 'jwt') throw new Error('jwt provider given a non-jwt grant');
      const { active } = signingKeys;
      // The claims serialised here, in the order jose's SignJWT writes them (its builder deep-copies and
      // re-validates them on every call, which issuance does not need): the same bytes.
      const claims = {
        task: task.id,
        scope: (scopes ?? grant.scopes).join(' '),
        iss_name: identity.issuer,
        iss: brokerIssuer,
        sub: identity.subject,
        aud: grant.audience,
        jti: leaseId,
        iat: Math.floor(issuedAtMs / 1000),
        exp: Math.floor(expiresAtMs / 1000),
      };
      const token = await new CompactSign(encoder.encode(JSON.stringify(claims)))
        .setProtectedHeader({ alg: active.alg, kid: active.kid, typ: 'at+jwt' })
        .sign(active.privateKey);
      // The token id is the lease id: nothing else to keep to revoke it.
      return { credential: { token, tokenType: 'Bearer' }, secret: token, handle: {} };
    },
  };
}
