import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  SignJWT,
} from 'jose';
import { createJwtProvider, createJwtRevoker } from '../../src/providers/jwt/jwt-provider';
import { loadSigningKeys } from '../../src/signing/signing-keys';

/**
 * The broker signs its JWTs with node:crypto and a key prepared once, not jose's async path: the tokens must
 * be what jose would make, byte for byte up to the signature (ECDSA and RSA-PSS signatures are randomised),
 * and verify with jose against the published JWKS, for every kind of key TASKLEASE_SIGNING_KEYS takes.
 */
describe('broker-signed JWTs, signed with node:crypto', () => {
  const KEYS: [string, Parameters<typeof generateKeyPair>[1]][] = [
    ['ES256', {}],
    ['ES384', {}],
    ['ES512', {}],
    ['RS256', { modulusLength: 2048 }],
    ['PS256', { modulusLength: 2048 }],
    ['EdDSA', { crv: 'Ed25519' }],
  ];

  it.each(KEYS)(
    '%s: the same header and claims as jose, and a signature jose verifies',
    async (alg, options) => {
      const { privateKey } = await generateKeyPair(alg, { ...options, extractable: true });
      const jwk = await exportJWK(privateKey);
      const ring = await loadSigningKeys(
        JSON.stringify({ keys: [{ ...jwk, alg, kid: await calculateJwkThumbprint(jwk) }] }),
      );
      const provider = createJwtProvider({
        revoker: createJwtRevoker({ redis: null as never, keys: null as never }),
        signingKeys: ring,
        brokerIssuer: 'tasklease-test',
      });
      const issuedAtMs = 1_796_000_000_000;
      const minted = await provider.mint({
        leaseId: '0123456789abcdef0123456789abcdef',
        grantName: 'artifacts-read',
        grant: {
          provider: 'jwt',
          audience: 'https://artifacts.test',
          scopes: ['artifacts:read', 'artifacts:list'],
          maxTtlSeconds: 600,
        } as never,
        identity: { issuer: 'agents', subject: 'repo:octo-org/octo-repo:ref:refs/heads/main' } as never,
        task: { id: 'fedcba9876543210fedcba9876543210' } as never,
        issuedAtMs,
        expiresAtMs: issuedAtMs + 300_000,
        scopes: undefined,
      });
      const token = (minted.credential as { token: string }).token;

      const fromJose = await new SignJWT({
        task: 'fedcba9876543210fedcba9876543210',
        scope: 'artifacts:read artifacts:list',
        iss_name: 'agents',
      })
        .setProtectedHeader({ alg, kid: ring.active.kid, typ: 'at+jwt' })
        .setIssuer('tasklease-test')
        .setSubject('repo:octo-org/octo-repo:ref:refs/heads/main')
        .setAudience('https://artifacts.test')
        .setJti('0123456789abcdef0123456789abcdef')
        .setIssuedAt(issuedAtMs / 1000)
        .setExpirationTime(issuedAtMs / 1000 + 300)
        .sign(ring.active.privateKey);
      const signingInput = (jws: string) => jws.split('.').slice(0, 2).join('.');
      expect(signingInput(token)).toBe(signingInput(fromJose));
      expect(minted.secret).toBe(token);

      const verified = await jwtVerify(token, createLocalJWKSet(ring.jwks), {
        issuer: 'tasklease-test',
        audience: 'https://artifacts.test',
        currentDate: new Date(issuedAtMs + 1000),
        typ: 'at+jwt',
      });
      expect(verified.payload).toMatchObject({
        jti: '0123456789abcdef0123456789abcdef',
        exp: issuedAtMs / 1000 + 300,
      });
      // A signature over other bytes does not verify: the signature is over exactly this header and payload.
      const [header, payload, signature] = token.split('.');
      const tampered = `${header}.${Buffer.from(JSON.stringify({ ...verified.payload, exp: 9e9 })).toString('base64url')}.${signature}`;
      await expect(jwtVerify(tampered, createLocalJWKSet(ring.jwks))).rejects.toThrow();
      expect(payload).toBeDefined();
    },
  );
});
