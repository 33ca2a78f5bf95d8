import { JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT } from '../domain/token-exchange';
import { ApiError } from './api-client';

export interface Exchanged {
  access_token: string;
  issued_token_type: string;
  credential?: Record<string, unknown>;
  lease_id: string;
  task_id: string;
  expires_at: string;
}

/** One grant's credential for the job, by RFC 8693 exchange of the job's own token. */
export async function exchange(
  addr: string,
  token: string,
  grant: string,
  options: { job?: string; ttl?: string },
) {
  const form = new URLSearchParams({
    grant_type: TOKEN_EXCHANGE_GRANT,
    subject_token: token,
    subject_token_type: JWT_TOKEN_TYPE,
    audience: grant,
  });
  if (options.job) form.set('job', options.job);
  if (options.ttl) form.set('ttl_seconds', options.ttl);
  const response = await fetch(new URL('/v1/token', addr), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  }).catch((error: Error) => {
    throw new ApiError(0, 'unreachable', `cannot reach ${addr}: ${error.message}`);
  });
  const body = (await response.json().catch(() => ({}))) as Exchanged & {
    error?: string;
    error_description?: string;
  };
  if (!response.ok)
    throw new ApiError(
      response.status,
      body.error ?? 'error',
      `grant ${grant}: ${body.error_description ?? response.statusText}`,
    );
  return body;
}
