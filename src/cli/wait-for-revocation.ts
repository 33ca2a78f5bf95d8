import type { RevocationProgress } from '../usecases/follow-revocation';
import { ApiError, type ApiCall } from './api-client';
import type { ProgressLine } from './progress-line';

export interface WaitOutcome {
  progress: RevocationProgress;
  timedOut: boolean;
}

/** The first polls come quickly (a few leases settle in milliseconds), then once a second. */
const FIRST_DELAY_MS = 250;
const STEADY_DELAY_MS = 1000;
/** Answers worth polling through: the broker busy, rate limiting this caller, or briefly unreachable. */
const TRANSIENT_STATUSES = new Set([0, 429, 503]);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const count = (value: number) => value.toLocaleString('en-US');

/** "revoking: 7,412 of 10,000 settled, 3 irrevocable" (and how many are being retried, if any). */
export function describeProgress(progress: RevocationProgress): string {
  const retrying = progress.retrying > 0 ? `, ${count(progress.retrying)} retrying` : '';
  return `revoking: ${count(progress.settled)} of ${count(progress.total)} settled, ${count(progress.irrevocable)} irrevocable${retrying}`;
}

/** "settled 9,997 of 10,000 (revoked 9,990, expired 7, irrevocable 3)": the states, most common first. */
export function describeOutcome(progress: RevocationProgress): string {
  return `settled ${count(progress.settled)} of ${count(progress.total)}${progress.total > 0 ? ` (${describeStates(progress.byState)})` : ''}`;
}

/** "revoking 12": states and how many leases are in each, most common first. */
export function describeStates(byState: Record<string, number>): string {
  return Object.entries(byState)
    .sort(([, a], [, b]) => b - a)
    .map(([state, n]) => `${state} ${count(n)}`)
    .join(', ');
}

/**
 * Polls `GET /v1/leases/revocations/{id}` (counts only, never lease bodies) until no lease is pending —
 * each settled or irrevocable — or `timeoutMs` passes. A slow answer slows the polling down with it, so
 * following a very large revocation never loads the broker more than the revocation itself.
 */
export async function waitForRevocation(
  call: ApiCall,
  revocationId: string,
  options: { timeoutMs: number; progress: ProgressLine },
): Promise<WaitOutcome> {
  const deadlineMs = Date.now() + options.timeoutMs;
  let delayMs = FIRST_DELAY_MS;
  let last: RevocationProgress | null = null;
  for (;;) {
    const startedMs = Date.now();
    const polled = await pollOnce(call, revocationId);
    if (!(polled instanceof ApiError)) {
      last = polled;
      options.progress.update(describeProgress(polled));
      if (polled.pending === 0) return { progress: polled, timedOut: false };
    }
    if (Date.now() >= deadlineMs) {
      if (last) return { progress: last, timedOut: true };
      throw polled;
    }
    const pollMs = Date.now() - startedMs;
    await sleep(Math.max(0, Math.min(Math.max(delayMs, 2 * pollMs), deadlineMs - Date.now())));
    delayMs = Math.min(STEADY_DELAY_MS, delayMs * 2);
  }
}

/** One poll: the progress, or a transient failure to poll through (anything else is thrown). */
async function pollOnce(call: ApiCall, revocationId: string): Promise<RevocationProgress | ApiError> {
  try {
    return await call<RevocationProgress>(
      'GET',
      `/v1/leases/revocations/${encodeURIComponent(revocationId)}`,
    );
  } catch (error) {
    if (error instanceof ApiError && TRANSIENT_STATUSES.has(error.status)) return error;
    throw error;
  }
}
