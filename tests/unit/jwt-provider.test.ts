import { SignJWT, createLocalJWKSet, jwtVerify } from 'jose';
import { createJwtProvider, createJwtRevoker } from '../../src/providers/jwt/jwt-provider';
import { generateSigningJwks, loadSigningKeys } from '../../src/signing/signing-keys';
import type { GrantConfig } from '../../src/config/schema';
import type { Identity, Task } from '../../src/domain/types';
import type { RedisClient } from '../../src/redis/connection';
import type { RedisKeys } from '../../src/redis/keys';

describe('broker-signed JWTs', () => {
  it("carry exactly the header and claims jose's SignJWT writes, and verify against the published JWKS", async () => {
    const signingKeys = await loadSigningKeys(JSON.stringify(await generateSigningJwks()));
    const revoker = createJwtRevoker({ redis: {} as RedisClient, keys: {} as RedisKeys });
    const provider = createJwtProvider({ revoker, signingKeys, brokerIssuer: 'https://broker.test' });
    const grant = { provider: 'jwt', audience: 'https://api.test', scopes: ['read', 'write'] } as GrantConfig;
    const identity = { issuer: 'gh', subject: 'repo:acme/api:ref:refs/heads/main' } as Identity;
    const task = { id: 'task-1' } as Task;
    const request = {
      leaseId: 'AbCdEfGhIjKlMnOpQrStUv',
      grantName: 'api',
      grant,
      identity,
      task,
      issuedAtMs: 1_800_000_000_123,
      expiresAtMs: 1_800_000_600_999,
    };
    const minted = await provider.mint(request);
    const token = (minted.credential as { token: string }).token;

    const { active } = signingKeys;
    const expected = await new SignJWT({ task: 'task-1', scope: 'read write', iss_name: 'gh' })
      .setProtectedHeader({ alg: active.alg, kid: active.kid, typ: 'at+jwt' })
      .setIssuer('https://broker.test')
      .setSubject(identity.subject)
      .setAudience('https://api.test')
      .setJti(request.leaseId)
      .setIssuedAt(1_800_000_000)
      .setExpirationTime(1_800_000_600)
      .sign(active.privateKey);
    // ECDSA signatures differ each time; the signed bytes do not.
    expect(token.split('.').slice(0, 2)).toEqual(expected.split('.').slice(0, 2));

    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(signingKeys.jwks), {
      issuer: 'https://broker.test',
      audience: 'https://api.test',
      currentDate: new Date(1_800_000_100_000),
      typ: 'at+jwt',
    });
    expect(protectedHeader.kid).toBe(active.kid);
    expect(payload).toMatchObject({ jti: request.leaseId, scope: 'read write', task: 'task-1' });

    const narrowed = await provider.mint({ ...request, scopes: ['read'] });
    const narrowedToken = (narrowed.credential as { token: string }).token;
    const claims = JSON.parse(Buffer.from(narrowedToken.split('.')[1] as string, 'base64url').toString());
    expect(claims.scope).toBe('read');
  });
});
