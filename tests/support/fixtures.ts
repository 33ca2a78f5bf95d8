import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import type { ConfigInput } from '../../src/config/schema';

/** The claim sets real platforms put in their tokens (../shared/fixtures/identity-claims.json). */
export type Platform = 'github-actions' | 'gitlab' | 'kubernetes' | 'spiffe-jwt-svid';
const FIXTURE_FILE = path.resolve(__dirname, '../../../shared/fixtures/identity-claims.json');
const BUNDLED_FIXTURE = path.resolve(__dirname, 'identity-claims.json');

export function platformClaims(platform: Platform): JWTPayload {
  let text: string;
  try {
    text = readFileSync(FIXTURE_FILE, 'utf8');
  } catch {
    text = readFileSync(BUNDLED_FIXTURE, 'utf8');
  }
  const all = JSON.parse(text) as Record<string, JWTPayload & { _note?: string }>;
  const {
    _note,
    iat: _iat,
    nbf: _nbf,
    exp: _exp,
    ...claims
  } = all[platform] as JWTPayload & { _note?: string };
  return claims;
}

export const tempDir = (label: string) => mkdtempSync(path.join(tmpdir(), `tasklease-${label}-`));

export interface TestIssuer {
  name: string;
  iss: string;
  kid: string;
  privateKey: CryptoKey;
  jwksFile: string;
  config: ConfigInput['issuers'][number];
  /** Signs `claims` (iss/aud/iat/exp filled in unless given) with this issuer's key. */
  sign(
    claims: JWTPayload,
    options?: { ttlSeconds?: number; header?: Record<string, unknown>; key?: CryptoKey },
  ): Promise<string>;
}

/** A local issuer: an ES256 (or RS256) key pair whose public JWKS is a file, configured like a real one. */
export async function createTestIssuer(options: {
  name: string;
  kind?: 'github-actions' | 'gitlab' | 'kubernetes' | 'spiffe' | 'oidc';
  iss?: string;
  alg?: 'ES256' | 'RS256';
  audience?: string;
  maxTokenLifetimeSeconds?: number;
}): Promise<TestIssuer> {
  const alg = options.alg ?? 'ES256';
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `${options.name}-key-1`;
  const jwksFile = path.join(tempDir('jwks'), `${options.name}.jwks.json`);
  writeFileSync(
    jwksFile,
    JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }] }),
  );
  const iss = options.iss ?? `https://${options.name}.issuer.test`;
  const audience = options.audience ?? 'tasklease';
  return {
    name: options.name,
    iss,
    kid,
    privateKey,
    jwksFile,
    config: {
      name: options.name,
      kind: options.kind ?? 'oidc',
      issuer: iss,
      jwksFile,
      audiences: [audience],
      maxTokenLifetimeSeconds: options.maxTokenLifetimeSeconds ?? 3600,
    },
    async sign(claims, signOptions = {}) {
      const now = Math.floor(Date.now() / 1000);
      const payload: JWTPayload = {
        iss,
        aud: audience,
        iat: now,
        exp: now + (signOptions.ttlSeconds ?? 600),
        ...claims,
      };
      return new SignJWT(payload)
        .setProtectedHeader({ alg, kid, typ: 'JWT', ...signOptions.header })
        .sign(signOptions.key ?? privateKey);
    },
  };
}
