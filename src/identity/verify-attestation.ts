import { sha256Hex } from '../domain/sha256';
import { decodeJwt, decodeProtectedHeader, jwtVerify, errors as joseErrors } from 'jose';
import type { IssuerConfig } from '../config/schema';
import { BrokerError } from '../domain/errors';
import type { Identity } from '../domain/types';
import { applyPreset, stringClaims } from './claim-presets';
import { createIssuerKeySet, type IssuerKeySet } from './issuer-keys';

export type VerifyAttestation = (token: string) => Promise<Identity>;

export interface AttestationVerifier {
  verify: VerifyAttestation;
  close(): void;
}

export interface VerifierOptions {
  /** Receives the real reason a token was refused; the caller only ever sees `unauthenticated`. */
  onReject: (reason: string, context: { issuer?: string; tokenSha256: string }) => void;
  onKeyError?: (issuer: string, error: unknown) => void;
  nowMs?: () => number;
  /**
   * How long a verified token's identity is remembered (default 60 s, 0 turns it off). A token is a bearer
   * proof until it expires, so this changes nothing for a valid token; it bounds how long a token verified
   * just before its issuer dropped the key keeps working: 60 s, well inside the JWKS refresh interval.
   */
  cacheSeconds?: number;
  cacheEntries?: number;
}

/** Verified identities by token hash, until min(exp, cached + ttl); the oldest entry goes first when full. */
function createIdentityCache(ttlSeconds: number, maxEntries: number) {
  const entries = new Map<string, { identity: Identity; untilMs: number }>();
  return {
    get(tokenSha256: string, nowMs: number): Identity | null {
      const entry = entries.get(tokenSha256);
      if (!entry) return null;
      if (entry.untilMs > nowMs) return entry.identity;
      entries.delete(tokenSha256);
      return null;
    },
    set(identity: Identity, nowMs: number): void {
      if (ttlSeconds <= 0) return;
      if (entries.size >= maxEntries) entries.delete(entries.keys().next().value as string);
      const untilMs = Math.min(identity.expiresAtMs, nowMs + ttlSeconds * 1000);
      entries.set(identity.tokenSha256, { identity: Object.freeze(identity), untilMs });
    },
  };
}

export { sha256Hex };

/** What reaches the log: the jose error code or our own reason, never the token. */
const reasonOf = (error: unknown): string =>
  error instanceof joseErrors.JOSEError ? `${error.code}: ${error.message}` : (error as Error).message;

/**
 * Verifies attestation tokens against the configured issuers only: the `iss` claim picks the issuer, whose
 * own keys must have signed it (a token naming issuer A but signed by B fails). Algorithms are the
 * asymmetric allowlist, so `none` and HMAC-with-a-public-key can never verify.
 */
export function createAttestationVerifier(
  issuers: readonly IssuerConfig[],
  options: VerifierOptions,
): AttestationVerifier {
  const now = options.nowMs ?? Date.now;
  const byIss = new Map<string, { config: IssuerConfig; keys: IssuerKeySet }>();
  for (const config of issuers) {
    const keys = createIssuerKeySet(config, (error) => options.onKeyError?.(config.name, error));
    byIss.set(config.issuer, { config, keys });
  }

  const cache = createIdentityCache(options.cacheSeconds ?? 60, options.cacheEntries ?? 10_000);

  const verify: VerifyAttestation = async (token) => {
    const tokenSha256 = sha256Hex(token);
    const cached = cache.get(tokenSha256, now());
    if (cached) return cached;
    const reject = (reason: string, issuer?: string): never => {
      options.onReject(reason, { issuer, tokenSha256 });
      throw new BrokerError('unauthenticated', 'identity token rejected');
    };
    let iss: unknown;
    try {
      decodeProtectedHeader(token);
      iss = decodeJwt(token).iss;
    } catch (error) {
      return reject(`malformed token: ${reasonOf(error)}`);
    }
    const entry = typeof iss === 'string' ? byIss.get(iss) : undefined;
    if (!entry) return reject(`issuer not configured: ${String(iss).slice(0, 200)}`);
    const { config, keys } = entry;

    let result;
    try {
      result = await jwtVerify(token, keys.getKey, {
        issuer: config.issuer,
        audience: config.audiences,
        algorithms: config.algorithms,
        clockTolerance: config.clockSkewSeconds,
        requiredClaims: ['iss', 'aud', 'exp'],
        currentDate: new Date(now()),
      });
    } catch (error) {
      return reject(reasonOf(error), config.name);
    }
    const { payload, protectedHeader } = result;
    const exp = payload.exp as number;
    const startedAt = payload.iat ?? payload.nbf;
    // Fails closed on what is left of the token as well as on exp − iat: an `iat` (or no iat) in the future
    // must not let a long-lived token pass as a short one.
    if (exp - now() / 1000 > config.maxTokenLifetimeSeconds + config.clockSkewSeconds) {
      return reject('token expires beyond the issuer maximum lifetime from now', config.name);
    }
    if (startedAt !== undefined && exp - startedAt > config.maxTokenLifetimeSeconds) {
      return reject(
        `token lifetime ${exp - startedAt}s exceeds the issuer maximum ${config.maxTokenLifetimeSeconds}s`,
        config.name,
      );
    }
    const claims = stringClaims(payload);
    const subject = claims[config.subjectClaim];
    if (!subject) return reject(`subject claim ${config.subjectClaim} missing or not a string`, config.name);
    const presetProblem = applyPreset(config.kind, claims, protectedHeader);
    if (presetProblem) return reject(presetProblem, config.name);
    const identity: Identity = {
      issuer: config.name,
      kind: config.kind,
      subject,
      claims,
      tokenSha256,
      expiresAtMs: exp * 1000,
    };
    cache.set(identity, now());
    return identity;
  };

  return { verify, close: () => byIss.forEach(({ keys }) => keys.close()) };
}
