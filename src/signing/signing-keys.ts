import { constants, createPrivateKey, sign as signWithNode, type KeyObject } from 'node:crypto';
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
  /**
   * The JWS signature of `signingInput` (`<header>.<payload>`, base64url), made with node:crypto and the key
   * prepared once: synchronous, about four times jose's async WebCrypto path one call at a time. The same
   * algorithm and encoding as jose (ECDSA as r‖s, RSA-PSS with a salt of the hash's length).
   */
  sign(signingInput: string): string;
}

const HASH_OF: Record<string, string> = { '256': 'sha256', '384': 'sha384', '512': 'sha512' };

/** A JWS signer for `alg` with a key prepared once (node:crypto KeyObject). */
function nodeSigner(jwk: JWK, alg: string): (signingInput: string) => string {
  const key: KeyObject = createPrivateKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  const hash = HASH_OF[alg.slice(2)];
  const sign = (options: Parameters<typeof signWithNode>[2], digest: string | null) => (input: string) =>
    signWithNode(digest, Buffer.from(input), options).toString('base64url');
  if (alg === 'EdDSA' || alg === 'Ed25519') return sign(key, null);
  if (!hash) throw new Error(`no signer for ${alg}`);
  if (alg.startsWith('ES')) return sign({ key, dsaEncoding: 'ieee-p1363' }, hash);
  if (alg.startsWith('RS')) return sign(key, hash);
  if (alg.startsWith('PS'))
    return sign(
      { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST },
      hash,
    );
  throw new Error(`no signer for ${alg}`);
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
    all.push({ kid, alg, privateKey, publicJwk, sign: nodeSigner({ ...jwk, alg }, alg) });
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
