import { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import { BrokerError } from '../../domain/errors';
import { introspectableAudiences } from '../../policy/admin-roles';
import type { TokenInspector } from '../../providers/jwt/inspect-token';
import type { BrokerDeps } from '../../usecases/deps';
import { requestRevocation } from '../../usecases/request-revocation';
import { identityOf } from '../authenticate';

const tokenBody = z.object({
  token: z.string().min(1).max(16_384),
  token_type_hint: z.string().max(64).optional(),
});

/**
 * RFC 7662 introspection and RFC 7009 revocation for broker-issued JWTs. Introspection needs an
 * authenticated caller (an admin with `view`, or a configured resource server); revocation needs only the
 * token itself — holding it is the proof — and answers 200 whatever the token was (RFC 7009 §2.2).
 */
export function oauthRoutes(deps: BrokerDeps, inspect: TokenInspector, authenticate: RequestHandler): Router {
  const router = Router();

  router.post('/v1/introspect', authenticate, async (req, res) => {
    const audiences = introspectableAudiences(deps.config, identityOf(res));
    if (!audiences) throw new BrokerError('forbidden', 'introspection is for resource servers and admins');
    const { token } = tokenBody.parse(req.body);
    res.set('Cache-Control', 'no-store');
    const inspection = await inspect(token);
    const lease = inspection.active ? await deps.leases.get(inspection.leaseId) : null;
    if (!inspection.active || lease?.state !== 'active') {
      res.json({ active: false });
      return;
    }
    const { payload } = inspection;
    // A resource server learns nothing about tokens minted for another audience (RFC 7662 §4).
    const tokenAudiences = ([] as unknown[]).concat(payload.aud);
    if (audiences !== 'all' && !tokenAudiences.some((aud) => audiences.has(String(aud)))) {
      res.json({ active: false });
      return;
    }
    res.json({
      active: true,
      token_type: 'Bearer',
      scope: payload.scope,
      sub: payload.sub,
      aud: payload.aud,
      iss: payload.iss,
      exp: payload.exp,
      iat: payload.iat,
      jti: payload.jti,
      task: payload.task,
      grant: lease.grant,
    });
  });

  router.post('/v1/revoke', async (req, res) => {
    const { token } = tokenBody.parse(req.body);
    const inspection = await inspect(token);
    if (inspection.active) {
      const lease = await deps.leases.get(inspection.leaseId);
      if (lease)
        await requestRevocation(deps, [lease], 'revoked by holder (RFC 7009)', `holder/${lease.subject}`);
    }
    res.set('Cache-Control', 'no-store');
    res.status(200).end();
  });

  return router;
}
