import type { ErrorRequestHandler, RequestHandler } from 'express';
import { z } from 'zod';
import { NotReplicatedError } from '../redis/durable-writes';
import { BrokerError, isBrokerError } from '../domain/errors';
import type { Logger } from '../observability/logger';

export const notFound: RequestHandler = () => {
  throw new BrokerError('not_found', 'no such route');
};

/** Body-parser's own failures, mapped to our stable codes. */
const fromBodyParser = (error: { type?: string; status?: number }): BrokerError | null => {
  switch (error.type) {
    case 'entity.parse.failed':
      return new BrokerError('invalid_json', 'the body is not valid JSON');
    case 'entity.too.large':
      return new BrokerError('payload_too_large', 'the body is larger than 64 KiB');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new BrokerError('unsupported_media_type', 'unsupported body encoding');
    default:
      return error.status && error.status < 500 && error.type
        ? new BrokerError('invalid_request', 'malformed body')
        : null;
  }
};

/** Redis unreachable (ioredis: offline queue disabled, connection closed, retries exhausted, timeouts). */
const REDIS_DOWN =
  /Stream isn't writeable|Connection is closed|MaxRetriesPerRequest|Command timed out|ECONNREFUSED|ECONNRESET/;
const isRedisUnavailable = (error: unknown): boolean =>
  error instanceof Error && (REDIS_DOWN.test(error.message) || error.name === 'MaxRetriesPerRequestError');

/**
 * Any error as the catalogue's: a BrokerError as it is, body-parser's and zod's mapped to invalid_request,
 * Redis outages to unavailable; anything else is logged in full and becomes `internal`.
 */
export function toBrokerError(
  error: unknown,
  logger: Logger,
  where: { method: string; path: string },
): BrokerError {
  let known: BrokerError | null = isBrokerError(error) ? error : fromBodyParser(error as { type?: string });
  if (!known && error instanceof z.ZodError) {
    const issues = error.issues.map((issue) => `${issue.path.join('.') || 'request'}: ${issue.message}`);
    known = new BrokerError('invalid_request', issues.join('; '));
  }
  // The router's own: a path segment whose percent-encoding is not UTF-8 (`/v1/tasks/%FF`).
  if (!known && error instanceof URIError && (error as { status?: number }).status === 400)
    known = new BrokerError('invalid_request', 'a path parameter is not valid percent-encoded UTF-8');
  if (!known && error instanceof NotReplicatedError) {
    known = new BrokerError('not_replicated', 'the Redis replicas did not confirm the write in time; retry', {
      cause: error,
    });
  }
  if (!known && isRedisUnavailable(error)) {
    known = new BrokerError('unavailable', 'a backend the broker needs is unavailable; nothing was issued', {
      cause: error,
    });
  }
  if (!known) {
    logger.error({ err: error, ...where }, 'unhandled error');
    return new BrokerError('internal', 'internal error');
  }
  if (known.status >= 500)
    logger.error(
      { err: known.cause ?? known, detail: known.detail, code: known.code, path: where.path },
      known.message,
    );
  return known;
}

/**
 * The one place that decides what a caller may see: a stable code always; the message only when it is
 * safe (`expose`); everything else goes to the log.
 */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error, req, res, _next) => {
    const known = toBrokerError(error, logger, { method: req.method, path: req.path });
    if (res.headersSent) return;
    if (known.retryAfterSeconds) res.set('Retry-After', String(known.retryAfterSeconds));
    res
      .status(known.status)
      .json({ error: known.code, message: known.expose ? known.message : 'internal error' });
  };
}
