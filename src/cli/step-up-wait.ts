import { createApiClient } from './api-client';
import { EXIT, ExitError } from './exit-codes';
import { describeDuration, waitForApproval, type ApprovalView } from './wait-for-approval';

/**
 * How long an agent waits for a step-up approval unless told otherwise: the broker's default
 * `approvals.pendingTtlSeconds`, so by default the agent waits as long as the request can stay pending
 * (a request that lapses sooner ends the wait sooner), and a forgotten request never holds a CI job longer.
 */
export const DEFAULT_APPROVAL_TIMEOUT_SECONDS = 900;

/** What the broker answered instead of a credential: a step-up request (`authorization_pending`, or 202). */
export interface PendingStepUp {
  approvalId: string;
  status: 'pending' | 'approved';
  grant: string;
  expiresAt: string;
  /** The task the approval is for (token exchange opens the job's task before asking). */
  taskId?: string;
}

export interface StepUpWaiting {
  addr: string;
  /** The token to poll the approval with: the requester's own (it may read its approval, no admin role). */
  token: () => Promise<string>;
  timeoutSeconds: number;
  /** Ends the wait at once (exec: a signal). */
  signal?: AbortSignal;
  /**
   * false when giving up also ends the task (exec completes it, and a new exec is a new task): running
   * again then asks anew instead of resuming the wait.
   */
  resumable?: boolean;
}

/** "approved by corp/alice@example.com: ticket OPS-12 checked", "expired at ...": how a decision ended. */
export function describeDecision(approval: ApprovalView): string {
  const decision = approval.decision;
  switch (approval.status) {
    case 'approved':
    case 'denied':
      return `${approval.status} by ${decision?.by ?? '?'}: ${decision?.reason ?? ''}`;
    case 'expired':
      return decision
        ? `expired at ${approval.expiresAt} (approved by ${decision.by}, not used in time)`
        : `expired at ${approval.expiresAt} with no decision`;
    case 'used':
      return `used at ${approval.usedAt ?? '?'} for lease ${approval.leaseId ?? '?'}`;
    default:
      return `pending until ${approval.expiresAt}`;
  }
}

/**
 * Tells the person watching which approval the agent waits for and what an approver runs (one line on
 * stderr, stdout stays the agent's), then long-polls it. Returns once it is approved; a denial, an expiry
 * or the timeout ends with an ExitError (exit 8, or 7 for the timeout).
 */
export async function awaitStepUp(pending: PendingStepUp, waiting: StepUpWaiting): Promise<void> {
  if (pending.status === 'approved') return;
  const { approvalId, grant } = pending;
  process.stderr.write(
    `tasklease: grant ${grant} needs a step-up approval; waiting up to ${describeDuration(waiting.timeoutSeconds * 1000)} ` +
      `for approval ${approvalId} (an approver runs: tasklease approvals approve ${approvalId} --reason "...")\n`,
  );
  const { approval, timedOut } = await waitForApproval(
    async () => createApiClient(waiting.addr, await waiting.token()),
    approvalId,
    { timeoutMs: waiting.timeoutSeconds * 1000, signal: waiting.signal },
  );
  if (timedOut)
    throw new ExitError(
      `grant ${grant}: approval ${approvalId} still pending after ${waiting.timeoutSeconds} s; nothing was issued ` +
        (waiting.resumable === false
          ? '(its task is completed, so it can no longer be used: running this again asks for a new approval)'
          : '(the request stays open until it expires: run this again to keep waiting)'),
      EXIT.timedOut,
    );
  if (approval?.status !== 'approved')
    throw new ExitError(
      `grant ${grant}: approval ${approvalId} ${approval ? describeDecision(approval) : 'unknown'}; nothing was issued`,
      EXIT.approvalRefused,
    );
  process.stderr.write(`tasklease: grant ${grant}: approval ${approvalId} ${describeDecision(approval)}\n`);
}
