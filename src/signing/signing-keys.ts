import {
  exportJWK,
  generateKeyPair,
  importJWK,
  calculateJwkThumbprint,
  type JWK,
  type CryptoKey,
} from 'jose';

export interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export interface SigningKeyRing {
  /** The first key of TASKLEASE_SIGNING_KEYS: everything new is signed with it. */
  active: SigningKey;
  /** Every key, active first; old keys stay here (and in the JWKS) so what they signed still verifies. */
  all: readonly SigningKey[];
  /** Public JWKS for `/.well-known/jwks.json`. */
  jwks: { keys: JWK[] };
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'] as const;

const algFor = (jwk: JWK): string => {
  if (jwk.alg) return jwk.alg;
  if (jwk.kty === 'EC')
    return (
      ({ 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' } as Record<string, string>)[jwk.crv ?? ''] ??
      ''
    );
  if (jwk.kty === 'OKP') return 'EdDSA';
  if (jwk.kty === 'RSA') return 'RS256';
  return '';
};

/** Parses TASKLEASE_SIGNING_KEYS (a JWKS of private asymmetric keys). Throws a message naming the problem. */
export async function loadSigningKeys(jwksJson: string): Promise<SigningKeyRing> {
  let parsed: { keys?: JWK[] };
  try {
    parsed = JSON.parse(jwksJson) as { keys?: JWK[] };
  } catch {
    throw new Error('TASKLEASE_SIGNING_KEYS is not JSON (expected a JSON Web Key Set of private keys)');
  }
  if (!Array.isArray(parsed.keys) || parsed.keys.length === 0) {
    throw new Error('TASKLEASE_SIGNING_KEYS has no keys');
  }
  const all: SigningKey[] = [];
  for (const [index, jwk] of parsed.keys.entries()) {
    const alg = algFor(jwk);
    // Fails closed: symmetric keys would make every verifier a signer.
    if (!alg || alg.startsWith('HS') || jwk.kty === 'oct')
      throw new Error(`signing key ${index}: asymmetric keys only`);
    if (!jwk.d) throw new Error(`signing key ${index}: a private key is required (no "d")`);
    const kid = jwk.kid ?? (await calculateJwkThumbprint(jwk));
    const privateKey = (await importJWK({ ...jwk, alg }, alg)) as CryptoKey;
    const publicJwk: JWK = { ...jwk, kid, alg, use: 'sig' };
    for (const member of PRIVATE_MEMBERS) delete publicJwk[member];
    all.push({ kid, alg, privateKey, publicJwk });
  }
  const kids = new Set(all.map((key) => key.kid));
  if (kids.size !== all.length) throw new Error('TASKLEASE_SIGNING_KEYS has two keys with the same kid');
  return { active: all[0] as SigningKey, all, jwks: { keys: all.map((key) => key.publicJwk) } };
}

/** A fresh ES256 private JWKS (for `tasklease dev` and `tasklease keys generate`). */
export async function generateSigningJwks(): Promise<{ keys: JWK[] }> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(jwk);
  return { keys: [{ ...jwk, kid, alg: 'ES256', use: 'sig' }] };
}
