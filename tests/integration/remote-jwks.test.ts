import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import type { IssuerConfig } from '../../src/config/schema';
import { ASYMMETRIC_ALGORITHMS } from '../../src/config/schema';
import { createAttestationVerifier } from '../../src/identity/verify-attestation';
import { waitFor } from '../support/broker';

/** An issuer that publishes its JWKS over HTTP on loopback, counting fetches, and can rotate its key. */
async function startJwksIssuer() {
  let keys: JWK[] = [];
  let fetches = 0;
  const server: Server = createServer((req, res) => {
    fetches++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const rotate = async (kid: string) => {
    const pair = await generateKeyPair('ES256');
    keys = [{ ...(await exportJWK(pair.publicKey)), kid, alg: 'ES256', use: 'sig' }];
    return (sub: string) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid })
        .setIssuer('https://remote.issuer.test')
        .setAudience('tasklease')
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(pair.privateKey);
  };
  return {
    server,
    rotate,
    fetches: () => fetches,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
  };
}

describe('an issuer configured with jwksUri', () => {
  it('verifies from a background-refreshed key set: no fetch per request, a rotated key picked up by the refresh', async () => {
    const issuer = await startJwksIssuer();
    const signWithFirst = await issuer.rotate('key-1');
    const config: IssuerConfig = {
      name: 'remote',
      kind: 'oidc',
      issuer: 'https://remote.issuer.test',
      jwksUri: issuer.url,
      audiences: ['tasklease'],
      subjectClaim: 'sub',
      maxTokenLifetimeSeconds: 3600,
      clockSkewSeconds: 30,
      algorithms: [...ASYMMETRIC_ALGORITHMS],
      jwksRefreshSeconds: 1,
    };
    const rejections: string[] = [];
    const verifier = createAttestationVerifier([config], {
      onReject: (reason) => rejections.push(reason),
      cacheSeconds: 1,
    });
    try {
      // The first refresh starts with the verifier, before any request.
      await waitFor(async () => issuer.fetches() >= 1, 2_000, 10);
      const token = await signWithFirst('agent-1');
      const before = issuer.fetches();
      for (let i = 0; i < 50; i++) expect((await verifier.verify(token)).subject).toBe('agent-1');
      expect(issuer.fetches() - before).toBeLessThanOrEqual(1); // at most the timer's own refresh

      // The issuer rotates; the background refresh (every second) brings the new key in.
      const signWithSecond = await issuer.rotate('key-2');
      const fetchesAtRotation = issuer.fetches();
      await waitFor(async () => issuer.fetches() > fetchesAtRotation, 3_000, 20);
      expect((await verifier.verify(await signWithSecond('agent-2'))).subject).toBe('agent-2');
      // A token verified before the rotation is remembered for at most cacheSeconds (here 1 s); then the
      // retired key no longer verifies it.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'unauthenticated' });
      expect(rejections.at(-1)).toMatch(/ERR_JWKS_NO_MATCHING_KEY|no applicable key/i);
    } finally {
      verifier.close();
      issuer.server.close();
    }
  });
});
