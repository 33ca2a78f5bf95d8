import { createHash } from 'node:crypto';
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
}

export const sha256Hex = (value: string): string => createHash('sha256').update(value).digest('hex');

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

  const verify: VerifyAttestation = async (token) => {
    const tokenSha256 = sha256Hex(token);
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
    return { issuer: config.name, kind: config.kind, subject, claims, tokenSha256, expiresAtMs: exp * 1000 };
  };

  return { verify, close: () => byIss.forEach(({ keys }) => keys.close()) };
}
