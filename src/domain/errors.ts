/**
 * The error catalogue. Every error a caller can see has a stable code listed here; docs/errors.md
 * documents each one (a test fails if one is missing). Callers switch on `code`, never on `message`.
 */
export const ERROR_CATALOGUE = {
  invalid_request: { status: 400, summary: 'The request body or query is malformed or fails validation.' },
  invalid_json: { status: 400, summary: 'The body is not valid JSON.' },
  payload_too_large: { status: 413, summary: 'The body is larger than the limit (64 KiB).' },
  unsupported_media_type: {
    status: 415,
    summary: 'The body is not JSON (or a form where the call accepts one).',
  },
  unauthenticated: {
    status: 401,
    summary: 'No identity token, or one that failed verification. The reason is logged, never returned.',
  },
  forbidden: {
    status: 403,
    summary: 'The identity may not make this call (not an admin, not the task owner, not a resource server).',
  },
  policy_denied: { status: 403, summary: 'The Cedar policy did not permit this request.' },
  not_found: {
    status: 404,
    summary: 'No such route, or no such task, lease, revocation or record visible to the caller.',
  },
  unknown_grant: { status: 400, summary: 'The grant is not configured.' },
  grant_not_declared: {
    status: 403,
    summary: 'The task declared a list of grants and this one is not in it.',
  },
  task_not_open: {
    status: 409,
    summary: 'The task is completed or expired; no credential can be issued in it.',
  },
  task_already_completed: { status: 409, summary: 'The task was completed before.' },
  lease_not_active: {
    status: 409,
    summary: 'The lease is already revoked or expired (one being revoked answers 202 again).',
  },
  lease_not_irrevocable: {
    status: 409,
    summary: 'Only an irrevocable lease can be retried; this one is in another state.',
  },
  approval_mismatch: {
    status: 403,
    summary:
      'The approvalId names no approval of this task, grant and TTL (another task or grant, a longer TTL than approved).',
  },
  approval_denied: {
    status: 403,
    summary:
      'An approver denied this step-up request; the denial is final (a new request is a new decision).',
  },
  approval_expired: {
    status: 403,
    summary:
      'The step-up request was not decided in time, or the approval was not used in time; it is final.',
  },
  approval_used: { status: 409, summary: 'The approval was already used: each one issues one credential.' },
  approval_not_pending: {
    status: 409,
    summary: 'The approval was already decided or has expired; a decision is final.',
  },
  separation_of_duties: {
    status: 403,
    summary:
      'The approver requested this approval, or was issued a grant the approved grant must be kept apart from (`approverMustNotHold`).',
  },
  not_entitled: {
    status: 403,
    summary:
      'The grant requires an entitlement (`entitlement: required`) and the workload holds no active one: none, or it (or its enrolment) is pending, denied, expired or revoked.',
  },
  record_not_active: {
    status: 409,
    summary:
      'The enrolment or entitlement is revoked, denied, lapsed or expired (or, to recertify, not active); propose a new one.',
  },
  invalid_grant: {
    status: 400,
    summary:
      'Token exchange (RFC 8693): the subject token failed verification, was already exchanged for this grant, or names no job.',
  },
  invalid_scope: {
    status: 400,
    summary:
      'Token exchange: the requested scope is not within the grant’s scopes (it may only narrow them).',
  },
  invalid_target: { status: 400, summary: 'Token exchange: the audience names no configured grant.' },
  unsupported_grant_type: {
    status: 400,
    summary: 'Token exchange: grant_type is not urn:ietf:params:oauth:grant-type:token-exchange.',
  },
  rate_limited: {
    status: 429,
    summary: 'The identity sent more requests this minute than `broker.requestsPerMinutePerIdentity` allows.',
  },
  too_many_refusals: {
    status: 429,
    summary:
      'The identity was refused more than `broker.refusalsPerMinutePerIdentity` times this minute; until the minute is over (Retry-After), its refusals answer this.',
  },
  lease_limit_reached: { status: 429, summary: 'The configured cap on active leases is reached.' },
  task_limit_reached: {
    status: 429,
    summary:
      'The identity holds its quota of open tasks (`broker.maxOpenTasksPerIdentity`): complete one, or wait for one to expire.',
  },
  placeholder_rejected: {
    status: 400,
    summary:
      "A value the grant's session policy needs (task ticket, ref, a claim) is missing or holds unsafe characters.",
  },
  session_policy_too_large: {
    status: 400,
    summary: "The grant's session policy, filled in for this task, exceeds what STS accepts.",
  },
  backend_refused: {
    status: 502,
    summary: 'The credential backend refused to mint (its permissions or trust policy); nothing was issued.',
  },
  unavailable: {
    status: 503,
    summary: 'A dependency (Redis, a credential backend) is unavailable; nothing was issued.',
  },
  not_replicated: {
    status: 503,
    summary:
      'Fewer Redis replicas than `broker.replicaAcks` confirmed the write in time; a minted credential was revoked and nothing was issued. Retry.',
  },
  internal: { status: 500, summary: 'An unexpected error; the detail is in the log.' },
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/** The one error type callers see. `expose` says whether `message` is safe to return. */
export class BrokerError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly expose: boolean;
  /** Detail for the log only (never returned to a caller). */
  readonly detail?: string;
  /** Sent as Retry-After (a 429 whose caller should wait). */
  readonly retryAfterSeconds?: number;

  constructor(
    code: ErrorCode,
    message: string,
    options: { detail?: string; cause?: unknown; retryAfterSeconds?: number } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'BrokerError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
    this.expose =
      this.status < 500 || code === 'unavailable' || code === 'backend_refused' || code === 'not_replicated';
    this.detail = options.detail;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export const isBrokerError = (error: unknown): error is BrokerError => error instanceof BrokerError;
