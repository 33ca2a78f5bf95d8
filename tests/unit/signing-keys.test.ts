import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { generateSigningJwks, loadSigningKeys } from '../../src/signing/signing-keys';

describe('TASKLEASE_SIGNING_KEYS', () => {
  it('signs with the first key and keeps publishing the old ones, so what they signed still verifies', async () => {
    const newer = (await generateSigningJwks()).keys[0];
    const older = (await generateSigningJwks()).keys[0];
    const ring = await loadSigningKeys(JSON.stringify({ keys: [newer, older] }));
    expect(ring.active.kid).toBe(newer?.kid);
    expect(ring.jwks.keys.map((k) => k.kid)).toEqual([newer?.kid, older?.kid]);
    for (const key of ring.jwks.keys)
      for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(key).not.toHaveProperty(member);

    const oldRing = await loadSigningKeys(JSON.stringify({ keys: [older] }));
    const signedBeforeRotation = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: oldRing.active.kid })
      .setIssuer('x')
      .sign(oldRing.active.privateKey);
    await expect(jwtVerify(signedBeforeRotation, createLocalJWKSet(ring.jwks))).resolves.toBeDefined();
  });

  it.each([
    ['not JSON', 'nope', /not JSON/],
    ['no keys', '{"keys":[]}', /no keys/],
    [
      'a symmetric key',
      JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0', alg: 'HS256' }] }),
      /asymmetric keys only/,
    ],
  ])('refuses %s', async (_label, value, message) => {
    await expect(loadSigningKeys(value)).rejects.toThrow(message);
  });

  it('refuses a public key (it could not sign) and duplicate kids', async () => {
    const { publicKey } = await generateKeyPair('ES256', { extractable: true });
    await expect(
      loadSigningKeys(JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'p' }] })),
    ).rejects.toThrow(/private key is required/);
    const key = (await generateSigningJwks()).keys[0];
    await expect(loadSigningKeys(JSON.stringify({ keys: [key, key] }))).rejects.toThrow(/same kid/);
  });
});
