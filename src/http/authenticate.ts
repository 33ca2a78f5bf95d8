import type { NextFunction, Request, Response } from 'express';
import { BrokerError } from '../domain/errors';
import type { AdminCaller, BreakGlassCaller, Identity } from '../domain/types';
import { isBreakGlassToken, type VerifyBreakGlass } from '../identity/break-glass';
import type { VerifyAttestation } from '../identity/verify-attestation';
import type { Logger } from '../observability/logger';

// The scheme is case-insensitive (RFC 7235 §2.1): some clients send `bearer`.
const BEARER = /^Bearer ([A-Za-z0-9_.~+/=-]+)$/i;

/** The same generic answer for every refused token: a caller never learns why (docs/errors.md). */
const rejected = () => new BrokerError('unauthenticated', 'identity token rejected');

function bearerToken(req: Request): string {
  const match = BEARER.exec(req.get('authorization') ?? '');
  if (!match) throw rejected();
  return match[1] as string;
}

/**
 * The attestation verifier as every route uses it: a break-glass token is refused before the JWT verifier
 * sees it. Break-glass tokens open admin routes only, and the JWT verifier's rejection log carries the
 * token's SHA-256 — for a break-glass token, the very value in the config.
 */
export function refusingBreakGlass(verify: VerifyAttestation, logger: Logger): VerifyAttestation {
  return async (token) => {
    if (isBreakGlassToken(token)) {
      logger.warn('break-glass token refused: it is accepted on admin routes only');
      throw rejected();
    }
    return verify(token);
  };
}

/** Workload routes: `Authorization: Bearer <attestation JWT>` → a verified identity, or a generic 401. */
export function authenticate(verify: VerifyAttestation) {
  return async (req: Request, res: Response, next: NextFunction) => {
    res.locals.identity = await verify(bearerToken(req));
    next();
  };
}

/**
 * Admin routes: an attestation JWT, or a break-glass token (prefix `tlbg_`) for when the identity provider
 * is down. Every break-glass use is logged as a warning, naming the entry and never the token or its hash.
 */
export function authenticateAdmin(verify: VerifyAttestation, breakGlass: VerifyBreakGlass, logger: Logger) {
  return async (req: Request, res: Response, next: NextFunction) => {
    const token = bearerToken(req);
    if (isBreakGlassToken(token)) {
      const caller = breakGlass(token);
      logger.warn(
        { breakGlass: caller.subject, method: req.method, path: req.originalUrl.split('?')[0] },
        'break-glass token used',
      );
      res.locals.breakGlass = caller;
    } else {
      res.locals.identity = await verify(token);
    }
    next();
  };
}

/** The verified identity. Fails closed: a break-glass caller has none, so no workload handler serves one. */
export function identityOf(res: Response): Identity {
  const identity = res.locals.identity as Identity | undefined;
  if (!identity) throw rejected();
  return identity;
}

/** Who called an admin route: a break-glass token's holder, or the verified identity. */
export const callerOf = (res: Response): AdminCaller =>
  (res.locals.breakGlass as BreakGlassCaller | undefined) ?? identityOf(res);
