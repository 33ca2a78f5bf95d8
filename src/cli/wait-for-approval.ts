import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError, type ApiCall } from './api-client';

/** The approval as GET /v1/approvals/{id} shows it (src/http/views.ts `approvalView`). */
export interface ApprovalView {
  approvalId: string;
  kind: string;
  status: 'pending' | 'approved' | 'denied' | 'expired' | 'used';
  summary: string;
  requester: { issuer: string; subject: string };
  reason?: string;
  grant?: string;
  ttlSeconds?: number;
  target?: string;
  task?: {
    taskId: string;
    purpose?: string;
    ticket?: string;
    ref?: string;
    job?: Record<string, string>;
    state?: string;
  };
  createdAt: string;
  expiresAt: string;
  decision?: { by: string; at: string; reason: string };
  usedAt?: string;
  leaseId?: string;
}

export interface ApprovalWaitOutcome {
  /** The last answer (null when the broker never answered before the deadline). */
  approval: ApprovalView | null;
  timedOut: boolean;
}

/** The broker holds one long poll at most this long (`waitSeconds` 0..55: proxies cut idle calls at 60 s). */
const MAX_WAIT_SECONDS = 55;
/** Answers worth polling through: the broker busy, rate limiting this caller, or briefly unreachable. */
const TRANSIENT_STATUSES = new Set([0, 429, 502, 503, 504]);
const RETRY_DELAY_MS = 1000;

/**
 * Long-polls `GET /v1/approvals/{id}?waitSeconds=..` until the approval is no longer pending (approved,
 * denied, expired, used) or `timeoutMs` passes. One call is open at a time and each lasts until a decision
 * or 55 s, so a waiting agent costs the broker about one request a minute. `callFor` gives the client per
 * poll, since a CI job's token may need replacing during a long wait. `signal` ends the wait at once.
 */
export async function waitForApproval(
  callFor: () => Promise<ApiCall>,
  approvalId: string,
  options: { timeoutMs: number; signal?: AbortSignal },
): Promise<ApprovalWaitOutcome> {
  const deadlineMs = Date.now() + options.timeoutMs;
  let last: ApprovalView | null = null;
  for (;;) {
    const remainingMs = deadlineMs - Date.now();
    const waitSeconds = Math.min(MAX_WAIT_SECONDS, Math.max(1, Math.ceil(remainingMs / 1000)));
    const polled = await pollOnce(await callFor(), approvalId, waitSeconds, options.signal);
    options.signal?.throwIfAborted();
    if (!(polled instanceof ApiError)) {
      last = polled;
      if (polled.status !== 'pending') return { approval: polled, timedOut: false };
    }
    if (Date.now() >= deadlineMs) {
      if (last) return { approval: last, timedOut: true };
      throw polled;
    }
    if (polled instanceof ApiError)
      await sleep(Math.min(RETRY_DELAY_MS, deadlineMs - Date.now()), undefined, { signal: options.signal });
  }
}

async function pollOnce(
  call: ApiCall,
  approvalId: string,
  waitSeconds: number,
  signal?: AbortSignal,
): Promise<ApprovalView | ApiError> {
  try {
    return await call<ApprovalView>(
      'GET',
      `/v1/approvals/${encodeURIComponent(approvalId)}?waitSeconds=${waitSeconds}`,
      undefined,
      { signal },
    );
  } catch (error) {
    if (error instanceof ApiError && TRANSIENT_STATUSES.has(error.status)) return error;
    throw error;
  }
}

/** "14m", "2h 5m", "3d 4h": how long, to the minute (seconds under a minute). */
export function describeDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h${minutes % 60 ? ` ${minutes % 60}m` : ''}`;
  const days = Math.floor(hours / 24);
  return `${days}d${hours % 24 ? ` ${hours % 24}h` : ''}`;
}
