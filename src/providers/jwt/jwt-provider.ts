import type { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import type { RedisKeys } from '../../leases/keys';
import type { CredentialProvider } from '../provider';
import type { SigningKeyRing } from '../../signing/signing-keys';

/** Broker-signed access tokens. `jti` is the lease id, so a token always leads back to its lease. */
/** `signingKeys` is null in the worker: it only revokes, so it never holds the signing secret. */
export function createJwtProvider(deps: {
  redis: Redis;
  keys: RedisKeys;
  signingKeys: SigningKeyRing | null;
  brokerIssuer: string;
}): CredentialProvider {
  const { redis, keys, signingKeys, brokerIssuer } = deps;
  return {
    kind: 'jwt',
    revocationSemantics:
      'The token id is put on the revocation list: introspection answers inactive at once. A resource server ' +
      'that only verifies the signature offline accepts the token until its exp.',

    async mint({ leaseId, grant, identity, task, issuedAtMs, expiresAtMs, scopes }) {
      if (grant.provider !== 'jwt') throw new Error('jwt provider given a non-jwt grant');
      if (!signingKeys) throw new Error('this process holds no signing keys');
      const { active } = signingKeys;
      const token = await new SignJWT({
        task: task.id,
        scope: (scopes ?? grant.scopes).join(' '),
        iss_name: identity.issuer,
      })
        .setProtectedHeader({ alg: active.alg, kid: active.kid, typ: 'at+jwt' })
        .setIssuer(brokerIssuer)
        .setSubject(identity.subject)
        .setAudience(grant.audience)
        .setJti(leaseId)
        .setIssuedAt(Math.floor(issuedAtMs / 1000))
        .setExpirationTime(Math.floor(expiresAtMs / 1000))
        .sign(active.privateKey);
      return { credential: { token, tokenType: 'Bearer' }, secret: token, handle: { jti: leaseId } };
    },

    async revoke(lease, { nowMs }) {
      const remainingMs = lease.expiresAtMs - nowMs;
      // Past exp the token is dead by its own claim: every verifier refuses it without our help.
      if (remainingMs <= 0) return { revocation: 'expired-at-source' };
      await redis.set(keys.revokedJti(lease.handle.jti ?? lease.id), '1', 'PX', remainingMs + 60_000);
      return { revocation: 'jwt-denylisted' };
    },
  };
}
