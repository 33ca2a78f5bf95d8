import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { BreakGlassConfig } from '../config/break-glass';
import { BrokerError } from '../domain/errors';
import { BREAK_GLASS_ISSUER, BREAK_GLASS_TOKEN_PREFIX, type BreakGlassCaller } from '../domain/types';

/** `tlbg_` + 32 random bytes in base64url (43 characters): 256 bits, so a hash of it cannot be brute-forced. */
const TOKEN_SHAPE = new RegExp(`^${BREAK_GLASS_TOKEN_PREFIX}[A-Za-z0-9_-]{43}$`);
const TOKEN_BYTES = 32;

export const isBreakGlassToken = (token: string): boolean => token.startsWith(BREAK_GLASS_TOKEN_PREFIX);

const sha256 = (token: string): Buffer => createHash('sha256').update(token).digest();

/** A new token and the SHA-256 (hex) that goes into the config. The token is shown once, never stored. */
export function generateBreakGlassToken(): { token: string; tokenSha256: string } {
  const token = `${BREAK_GLASS_TOKEN_PREFIX}${randomBytes(TOKEN_BYTES).toString('base64url')}`;
  return { token, tokenSha256: sha256(token).toString('hex') };
}

/** A break-glass token → its caller, or a generic 401 (the reason goes to `onReject`, never to the caller). */
export type VerifyBreakGlass = (token: string) => BreakGlassCaller;

export interface BreakGlassOptions {
  /** The real reason a token was refused, and the entry's name when the token matched one (expired). */
  onReject: (reason: string, name?: string) => void;
  nowMs: () => number;
}

export function createBreakGlassVerifier(
  entries: readonly BreakGlassConfig[],
  options: BreakGlassOptions,
): VerifyBreakGlass {
  const known = entries.map((entry) => ({
    entry,
    digest: Buffer.from(entry.tokenSha256, 'hex'),
    expiresAtMs: entry.expiresAt ? Date.parse(entry.expiresAt) : Infinity,
  }));
  const reject = (reason: string, name?: string): never => {
    options.onReject(reason, name);
    throw new BrokerError('unauthenticated', 'identity token rejected');
  };

  return (token) => {
    if (known.length === 0) return reject('no break-glass tokens are configured');
    if (!TOKEN_SHAPE.test(token)) return reject('malformed break-glass token');
    const digest = sha256(token);
    // Constant time, and every entry is compared: the time taken says nothing about the stored hashes.
    let match: (typeof known)[number] | undefined;
    for (const candidate of known) {
      if (timingSafeEqual(digest, candidate.digest) && !match) match = candidate;
    }
    if (!match) return reject('unknown break-glass token');
    if (options.nowMs() >= match.expiresAtMs) return reject('expired break-glass token', match.entry.name);
    return Object.freeze({
      issuer: BREAK_GLASS_ISSUER,
      subject: match.entry.name,
      breakGlass: true,
      roles: match.entry.roles,
    });
  };
}
