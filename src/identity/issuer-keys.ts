import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, type JWTVerifyGetKey, type JSONWebKeySet } from 'jose';
import type { IssuerConfig } from '../config/schema';

export interface IssuerKeySet {
  getKey: JWTVerifyGetKey;
  /** Stops background refresh (remote sets). */
  close(): void;
}

/**
 * Keys of one configured issuer. A remote set is refreshed in the background on a timer so that, in steady
 * state, no request waits on a fetch; jose still fetches on an unknown `kid` (rate-limited by its cooldown).
 */
export function createIssuerKeySet(issuer: IssuerConfig, onError: (error: unknown) => void): IssuerKeySet {
  if (issuer.jwksFile) {
    const jwks = JSON.parse(readFileSync(issuer.jwksFile, 'utf8')) as JSONWebKeySet;
    return { getKey: createLocalJWKSet(jwks), close: () => {} };
  }
  const remote = createRemoteJWKSet(new URL(issuer.jwksUri as string), {
    cacheMaxAge: issuer.jwksRefreshSeconds * 2 * 1000,
    cooldownDuration: 30_000,
    timeoutDuration: 5_000,
  });
  const refresh = () => remote.reload().catch(onError);
  void refresh();
  const timer = setInterval(refresh, issuer.jwksRefreshSeconds * 1000);
  timer.unref();
  return { getKey: remote, close: () => clearInterval(timer) };
}
