import type { NextFunction, Request, Response } from 'express';
import { BrokerError } from '../domain/errors';
import type { Identity } from '../domain/types';
import type { VerifyAttestation } from '../identity/verify-attestation';
import { adminPermissions, type AdminPermission } from '../policy/admin-roles';
import type { Config } from '../config/schema';

// The scheme is case-insensitive (RFC 7235 §2.1): some clients send `bearer`.
const BEARER = /^Bearer ([A-Za-z0-9_.~+/=-]+)$/i;

/** `Authorization: Bearer <attestation JWT>` → a verified identity in `res.locals.identity`, or a generic 401. */
export function authenticate(verify: VerifyAttestation) {
  return async (req: Request, res: Response, next: NextFunction) => {
    const match = BEARER.exec(req.get('authorization') ?? '');
    // The same generic message as a token that fails verification: a caller never learns why (docs/errors.md).
    if (!match) throw new BrokerError('unauthenticated', 'identity token rejected');
    res.locals.identity = await verify(match[1] as string);
    next();
  };
}

export const identityOf = (res: Response): Identity => res.locals.identity as Identity;

/** Admin calls: the verified identity must hold a role that grants `permission`. */
export function requireAdmin(config: Pick<Config, 'admins'>, permission: AdminPermission) {
  return (_req: Request, res: Response, next: NextFunction) => {
    if (!adminPermissions(config, identityOf(res)).has(permission)) {
      throw new BrokerError('forbidden', `this call needs an admin role with "${permission}"`);
    }
    next();
  };
}
