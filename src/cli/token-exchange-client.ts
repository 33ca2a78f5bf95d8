import { JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT } from '../domain/token-exchange';
import { ApiError } from './api-client';
import { awaitStepUp, type PendingStepUp, type StepUpWaiting } from './step-up-wait';

export interface Exchanged {
  access_token: string;
  issued_token_type: string;
  credential?: Record<string, unknown>;
  lease_id: string;
  task_id: string;
  expires_at: string;
}

/** The exchange answered `authorization_pending`: a human must approve this grant first. */
export class AuthorizationPending extends ApiError {
  constructor(
    readonly pending: PendingStepUp,
    message: string,
  ) {
    super(400, 'authorization_pending', message);
  }
}

interface ErrorBody {
  error?: string;
  error_description?: string;
  approval_id?: string;
  approval_status?: 'pending' | 'approved';
  expires_at?: string;
  task_id?: string;
}

/** One grant's credential for the job, by RFC 8693 exchange of the job's own token. */
export async function exchange(
  addr: string,
  token: string,
  grant: string,
  options: { job?: string; ttl?: string; approvalId?: string },
) {
  const form = new URLSearchParams({
    grant_type: TOKEN_EXCHANGE_GRANT,
    subject_token: token,
    subject_token_type: JWT_TOKEN_TYPE,
    audience: grant,
  });
  if (options.job) form.set('job', options.job);
  if (options.ttl) form.set('ttl_seconds', options.ttl);
  if (options.approvalId) form.set('approval_id', options.approvalId);
  const response = await fetch(new URL('/v1/token', addr), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  }).catch((error: Error) => {
    throw new ApiError(0, 'unreachable', `cannot reach ${addr}: ${error.message}`);
  });
  const body = (await response.json().catch(() => ({}))) as Exchanged & ErrorBody;
  const message = `grant ${grant}: ${body.error_description ?? response.statusText}`;
  if (body.error === 'authorization_pending' && body.approval_id)
    throw new AuthorizationPending(
      {
        approvalId: body.approval_id,
        status: body.approval_status ?? 'pending',
        grant,
        expiresAt: body.expires_at ?? '',
        taskId: body.task_id,
      },
      message,
    );
  if (!response.ok) throw new ApiError(response.status, body.error ?? 'error', message);
  return body;
}

/** An approved approval answers with the credential; more rounds than this would be a broker bug. */
const MAX_STEP_UP_ROUNDS = 3;

/**
 * The exchange, waiting for a step-up approval when the grant needs one: `authorization_pending` → long-poll
 * the approval with the job's token → the same exchange again with `approval_id`. `onPending` hears of the
 * request first (exec notes the task, to complete it should the approval never come).
 */
export async function exchangeWithStepUp(
  addr: string,
  grant: string,
  options: { job?: string; ttl?: string },
  waiting: StepUpWaiting & { onPending?: (pending: PendingStepUp) => void },
): Promise<Exchanged> {
  let approvalId: string | undefined;
  for (let round = 1; ; round++) {
    try {
      return await exchange(addr, await waiting.token(), grant, { ...options, approvalId });
    } catch (error) {
      if (!(error instanceof AuthorizationPending) || round >= MAX_STEP_UP_ROUNDS) throw error;
      waiting.onPending?.(error.pending);
      approvalId = error.pending.approvalId;
      await awaitStepUp(error.pending, waiting);
    }
  }
}
