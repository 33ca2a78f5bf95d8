import { Router, type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import type { GrantConfig } from '../../config/schema';
import { BrokerError } from '../../domain/errors';
import {
  ACCESS_TOKEN_TYPE,
  ID_TOKEN_TYPE,
  JWT_TOKEN_TYPE,
  TOKEN_EXCHANGE_GRANT,
} from '../../domain/token-exchange';
import type { VerifyAttestation } from '../../identity/verify-attestation';
import type { Logger } from '../../observability/logger';
import type { BrokerDeps } from '../../usecases/deps';
import { exchangeToken } from '../../usecases/exchange-token';
import { revokeUnreturned } from '../../usecases/request-revocation';
import { watchCallerGone } from '../caller-gone';
import { toBrokerError } from '../errors';
import type { RateLimit } from '../rate-limit';

const SUBJECT_TOKEN_TYPES = [JWT_TOKEN_TYPE, ID_TOKEN_TYPE];

/** `issued_token_type` per provider: a JWT is one; the others are credentials in a documented JSON form. */
const ISSUED_TOKEN_TYPES = {
  jwt: JWT_TOKEN_TYPE,
  'aws-sts': 'urn:tasklease:params:oauth:token-type:aws-credentials',
  'vault-token': 'urn:tasklease:params:oauth:token-type:vault-token',
  'vault-dynamic': 'urn:tasklease:params:oauth:token-type:vault-secret',
} as const;

const issuedTypeOf = (grant: GrantConfig): string =>
  grant.provider === 'vault' ? ISSUED_TOKEN_TYPES[`vault-${grant.mode}`] : ISSUED_TOKEN_TYPES[grant.provider];

const text = (max: number) => z.string().min(1).max(max);
/** Form bodies may repeat a parameter; RFC 6749 §3.1 says parameters must not be sent more than once. */
const once = (max: number) => z.string().max(max, `at most ${max} characters`);

const exchangeBody = z.object({
  grant_type: once(200),
  subject_token: text(16_384),
  subject_token_type: once(200),
  audience: once(200).optional(),
  resource: z.unknown().optional(),
  scope: once(2000).optional(),
  requested_token_type: once(200).optional(),
  actor_token: z.unknown().optional(),
  actor_token_type: z.unknown().optional(),
  /** Extension: the job's name (GITHUB_JOB, a matrix entry) to tell jobs of one run apart. */
  job: z
    .string()
    .regex(/^[\w.:@/ -]{1,128}$/, 'letters, digits and . : @ / - _ space, at most 128')
    .optional(),
  /** Extension: a shorter life than the grant's maximum. */
  ttl_seconds: z.coerce.number().int().min(1).max(604_800).optional(),
  /** Extension: the step-up approval an earlier `authorization_pending` answer named, once approved. */
  approval_id: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'an approval id')
    .optional(),
});

/** The request's problems in RFC 8693 terms, checked before the token is even verified. */
function parseExchange(body: unknown) {
  const grantType = (body as { grant_type?: unknown } | undefined)?.grant_type;
  if (grantType !== undefined && grantType !== TOKEN_EXCHANGE_GRANT)
    throw new BrokerError('unsupported_grant_type', `grant_type must be ${TOKEN_EXCHANGE_GRANT}`);
  const parsed = exchangeBody.safeParse(body ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new BrokerError('invalid_request', `${issue?.path.join('.') || 'request'}: ${issue?.message}`);
  }
  const request = parsed.data;
  if (!SUBJECT_TOKEN_TYPES.includes(request.subject_token_type))
    throw new BrokerError(
      'invalid_request',
      `subject_token_type must be one of ${SUBJECT_TOKEN_TYPES.join(', ')}`,
    );
  if (request.actor_token !== undefined || request.actor_token_type !== undefined)
    throw new BrokerError('invalid_request', 'delegation (actor_token) is not supported');
  if (request.resource !== undefined)
    throw new BrokerError('invalid_target', 'name the grant in audience; resource is not supported');
  if (!request.audience) throw new BrokerError('invalid_target', 'audience must name a configured grant');
  return request;
}

/** RFC 6749 §5.2: `{error, error_description}`. Malformed bodies are `invalid_request` whatever went wrong. */
const RFC_CODES: Partial<Record<string, string>> = {
  invalid_json: 'invalid_request',
  payload_too_large: 'invalid_request',
  unsupported_media_type: 'invalid_request',
  unknown_grant: 'invalid_target',
  // A subject token that fails verification. RFC 8693 §2.2.2 would say invalid_request; invalid_grant is
  // RFC 6749's code for a grant that is invalid or expired, which is what the broker's users look for.
  unauthenticated: 'invalid_grant',
};

function exchangeError(logger: Logger) {
  return (thrown: unknown, req: Request, res: Response) => {
    // Anything, a Redis outage or a bug included, answers in the RFC's shape (logged in full by toBrokerError).
    const error = toBrokerError(thrown, logger, { method: req.method, path: req.path });
    const code = RFC_CODES[error.code] ?? error.code;
    const status = code === 'invalid_grant' || code === 'invalid_request' ? 400 : error.status;
    if (error.status < 500 && error.detail)
      logger.info({ code, detail: error.detail }, 'token exchange refused');
    res.set({ 'Cache-Control': 'no-store', Pragma: 'no-cache' });
    if (error.retryAfterSeconds) res.set('Retry-After', String(error.retryAfterSeconds));
    res
      .status(status)
      .json({ error: code, error_description: error.expose ? error.message : 'internal error' });
  };
}

/**
 * Body-parser's failures (bad JSON, too large) happen before any route; mounted on /v1/token ahead of the
 * app's own handler, this answers them in the RFC's shape too.
 */
export function tokenExchangeErrors(logger: Logger) {
  const fail = exchangeError(logger);
  return (error: unknown, req: Request, res: Response, _next: NextFunction) => fail(error, req, res);
}

/** RFC 8693 token exchange at POST /v1/token: a CI job's OIDC token in, one grant's credential out. */
export function tokenExchangeRoutes(
  deps: BrokerDeps,
  verify: VerifyAttestation,
  logger: Logger,
  rateLimit: RateLimit | null,
): Router {
  const router = Router();
  const fail = exchangeError(logger);

  router.post('/v1/token', async (req, res) => {
    try {
      const request = parseExchange(req.body);
      // The token first: nobody learns which grants exist, or what they issue, without a valid one.
      const identity = await verify(request.subject_token);
      if (rateLimit) await rateLimit(identity, res);
      const name = request.audience as string;
      // Own keys only: `constructor` or `__proto__` must not pass for a grant.
      const grant = Object.hasOwn(deps.config.grants, name) ? deps.config.grants[name] : undefined;
      if (!grant) throw new BrokerError('invalid_target', 'audience names no configured grant');
      const issuedType = issuedTypeOf(grant);
      const acceptable = grant.provider === 'jwt' ? [JWT_TOKEN_TYPE, ACCESS_TOKEN_TYPE] : [issuedType];
      if (request.requested_token_type && !acceptable.includes(request.requested_token_type))
        throw new BrokerError('invalid_request', `grant ${request.audience} issues ${issuedType}`);
      const scopes = request.scope?.split(' ').filter(Boolean);
      // A caller that hangs up before the token is returned never holds it: revoked at once (as credentials).
      const callerGone = watchCallerGone(res);
      const issued = await exchangeToken(deps, identity, {
        grant: name,
        // An empty `scope=` is no scope parameter at all, not a request for none.
        scopes: scopes?.length ? scopes : undefined,
        job: request.job,
        ttlSeconds: request.ttl_seconds,
        approvalId: request.approval_id,
      });
      if (callerGone() && !('pending' in issued)) return void (await revokeUnreturned(deps, issued.leaseId));
      res.set({ 'Cache-Control': 'no-store', Pragma: 'no-cache' });
      if ('pending' in issued) {
        // RFC 8628 §3.5's answer for "a human has not decided yet": the client polls, then repeats the call.
        const { pending } = issued;
        res.status(400).json({
          error: 'authorization_pending',
          error_description: `grant ${name} needs a step-up approval; repeat this exchange with approval_id once it is approved`,
          approval_id: pending.approvalId,
          approval_status: pending.status,
          expires_at: pending.expiresAt,
          task_id: issued.taskId,
        });
        return;
      }
      const endsAtMs = Math.min(
        Date.parse(issued.expiresAt),
        issued.notAfter ? Date.parse(issued.notAfter) : Infinity,
      );
      const credential = issued.credential;
      const jwt = grant.provider === 'jwt';
      res.json({
        access_token: jwt ? credential.token : JSON.stringify(credential),
        issued_token_type: issuedType,
        // RFC 8693 §2.2.1: N_A when the issued token is not an OAuth access token.
        token_type: jwt ? 'Bearer' : 'N_A',
        expires_in: Math.max(0, Math.floor((endsAtMs - deps.nowMs()) / 1000)),
        ...(jwt ? { scope: scopes?.length ? scopes.join(' ') : grant.scopes.join(' ') } : { credential }),
        lease_id: issued.leaseId,
        task_id: issued.taskId,
        expires_at: issued.expiresAt,
      });
    } catch (error) {
      fail(error, req, res);
    }
  });
  return router;
}
