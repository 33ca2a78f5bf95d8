import express, { type Express } from 'express';
import type { RedisClient } from '../redis/connection';
import type { VerifyBreakGlass } from '../identity/break-glass';
import type { VerifyAttestation } from '../identity/verify-attestation';
import type { Logger } from '../observability/logger';
import type { Metrics } from '../observability/metrics';
import type { TokenInspector } from '../providers/jwt/inspect-token';
import type { BrokerDeps } from '../usecases/deps';
import { BrokerError } from '../domain/errors';
import { assertAdminRoutesGated } from './admin-gate';
import { authenticate, authenticateAdmin, refusingBreakGlass } from './authenticate';
import { errorHandler, notFound } from './errors';
import { createRateLimit, rateLimitMiddleware } from './rate-limit';
import type { RedisKeys } from '../redis/keys';
import type { PrimaryWatch } from '../redis/primary-watch';
import { ADMIN_PATHS, adminRoutes } from './routes/admin';
import { APPROVAL_PATHS, approvalRoutes } from './routes/approvals';
import { auditExportRoutes } from './routes/audit-export';
import { ENTITLEMENT_PATHS, entitlementRoutes } from './routes/entitlements';
import { oauthRoutes } from './routes/oauth';
import { systemRoutes } from './routes/system';
import { taskRoutes } from './routes/tasks';
import { tokenExchangeErrors, tokenExchangeRoutes } from './routes/token-exchange';

export interface AppDeps {
  keys: RedisKeys;
  broker: BrokerDeps;
  verify: VerifyAttestation;
  /** Break-glass tokens (config `breakGlass`), accepted on admin routes only. */
  breakGlass: VerifyBreakGlass;
  inspectToken: TokenInspector;
  redis: RedisClient;
  primary: PrimaryWatch;
  metrics: Metrics;
  logger: Logger;
}

export const BODY_LIMIT = '64kb';
const FORM_PATHS = ['/v1/introspect', '/v1/revoke', '/v1/token'];

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  // No ETags: these answers are never cached, and hashing every body costs CPU on the hot path.
  app.set('etag', false);
  app.set('query parser', 'simple');
  // A line per request at debug level only; otherwise the hot path does not even time the request.
  if (deps.logger.isLevelEnabled('debug')) {
    app.use((req, res, next) => {
      const startedMs = performance.now();
      res.on('finish', () => {
        const ms = Math.round(performance.now() - startedMs);
        deps.logger.debug({ method: req.method, path: req.path, status: res.statusCode, ms }, 'request');
      });
      next();
    });
  }
  app.use(express.json({ limit: BODY_LIMIT, strict: true }));
  // OAuth endpoints (RFC 7662/7009/8693) take form bodies; nothing else does, so nothing else parses them.
  app.use(FORM_PATHS, express.urlencoded({ limit: BODY_LIMIT, extended: false }));

  // One verifier for every route: a break-glass token never reaches the JWT verifier.
  const verify = refusingBreakGlass(deps.verify, deps.logger);
  const auth = authenticate(verify);
  const rateLimit = createRateLimit(
    deps.redis,
    deps.keys,
    deps.broker.config.broker.requestsPerMinutePerIdentity,
  );
  // Identity tokens only: approvals and entitlements are named people's decisions, never a break-glass card's.
  const decisionPaths = [...APPROVAL_PATHS, ...ENTITLEMENT_PATHS];
  app.use(['/v1/tasks', ...decisionPaths], auth);
  app.use([...ADMIN_PATHS], authenticateAdmin(verify, deps.breakGlass, deps.logger));
  if (rateLimit) app.use(['/v1/tasks', ...ADMIN_PATHS, ...decisionPaths], rateLimitMiddleware(rateLimit));
  // A JSON call with another body type fails loudly instead of arriving as an empty body.
  app.use(['/v1/tasks', '/v1/leases', ...decisionPaths], (req, _res, next) => {
    if (req.method === 'POST' && req.headers['content-length'] !== '0' && !req.is('application/json')) {
      throw new BrokerError('unsupported_media_type', 'send the body as application/json');
    }
    next();
  });

  // The workload routes first: a credential call is most of the traffic, and is matched before the rest.
  app.use(taskRoutes(deps.broker));
  app.use(
    systemRoutes({ primary: deps.primary, metrics: deps.metrics, signingKeys: deps.broker.signingKeys }),
  );
  app.use(oauthRoutes(deps.broker, deps.inspectToken, auth));
  app.use(tokenExchangeRoutes(deps.broker, verify, deps.logger, rateLimit));
  app.use(adminRoutes(deps.broker));
  app.use(auditExportRoutes(deps.broker));
  app.use(approvalRoutes(deps.broker));
  app.use(entitlementRoutes(deps.broker));
  app.use('/v1/token', tokenExchangeErrors(deps.logger));
  app.use(notFound);
  app.use(errorHandler(deps.logger));
  assertAdminRoutesGated(app, [...ADMIN_PATHS, ...decisionPaths]);
  return app;
}
