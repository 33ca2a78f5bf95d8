import type { Approval } from '../approvals/approval';
import type { Logger } from './logger';
import { createWebhook } from './webhook';

export interface IrrevocableLease {
  leaseId: string;
  grant: string;
  provider: string;
  task: string;
  issuer: string;
  subject: string;
  reason: string;
  atMs: number;
}

export interface IrrevocableAlerts {
  notify(lease: IrrevocableLease): void;
  /** Sends what is pending now (shutdown). */
  flush(): Promise<void>;
}

/** At most this many leases are listed in one alert; `count` still says how many there were. */
const MAX_LISTED = 100;

/**
 * A webhook for leases that became irrevocable, debounced: the first one opens a window of `debounceMs`,
 * and everything that happens in it goes out as one POST when it closes, so a failing backend pages once,
 * not once per lease. Best effort (see createWebhook): the irrevocable list, its metric and the sweeper's
 * retries are the authority.
 */
export function createIrrevocableAlerts(options: {
  url: string;
  debounceMs: number;
  brokerIssuer: string;
  logger: Logger;
  onUndelivered?: () => void;
}): IrrevocableAlerts {
  const webhook = createWebhook({
    url: options.url,
    name: 'irrevocable-lease alert',
    logger: options.logger,
    onUndelivered: options.onUndelivered,
  });
  let pending: IrrevocableLease[] = [];
  let timer: NodeJS.Timeout | null = null;

  function sendPending(): void {
    if (timer) clearTimeout(timer);
    timer = null;
    const batch = pending;
    pending = [];
    if (batch.length === 0) return;
    const body = {
      event: 'tasklease.leases.irrevocable',
      broker: options.brokerIssuer,
      at: new Date().toISOString(),
      count: batch.length,
      leases: batch
        .slice(0, MAX_LISTED)
        .map((lease) => ({ ...lease, at: new Date(lease.atMs).toISOString(), atMs: undefined })),
      truncated: batch.length > MAX_LISTED,
    };
    webhook.post(body, { count: batch.length });
  }

  return {
    notify(lease) {
      pending.push(lease);
      if (timer) return;
      timer = setTimeout(sendPending, options.debounceMs);
      timer.unref();
    },
    async flush() {
      sendPending();
      await webhook.settled();
    },
  };
}

export interface ApprovalNotifications {
  requested(approval: Approval): void;
  /** Resolves once the notifications under way are sent or given up on (shutdown). */
  flush(): Promise<void>;
}

/**
 * `approvals.webhook`: one POST per new approval request, at once (an approver is waited for: no debounce).
 * What an approver needs to find the request and nothing more — no token, no token hash, no credential.
 */
export function createApprovalNotifications(options: {
  url: string;
  brokerIssuer: string;
  logger: Logger;
  onUndelivered?: () => void;
}): ApprovalNotifications {
  const webhook = createWebhook({
    url: options.url,
    name: 'approval request notification',
    logger: options.logger,
    onUndelivered: options.onUndelivered,
  });
  return {
    requested(approval) {
      const body = {
        event: 'tasklease.approval.requested',
        broker: options.brokerIssuer,
        at: new Date().toISOString(),
        approval: {
          approvalId: approval.id,
          kind: approval.kind,
          summary: approval.summary,
          requester: { issuer: approval.requester.issuer, subject: approval.requester.subject },
          grant: approval.grant,
          ttlSeconds: approval.ttlSeconds,
          reason: approval.reason,
          taskId: approval.taskId,
          expiresAt: new Date(approval.expiresAtMs).toISOString(),
        },
      };
      webhook.post(body, { approvalId: approval.id });
    },
    flush: () => webhook.settled(),
  };
}

/** A restore the worker found: the audit file was ahead of Redis (src/audit/audit-file-restore.ts). */
export interface AuditRestoreAlert {
  redisHead: { seq: number; id: string };
  fileHead: { seq: number; id: string };
  eventsBeyond: number;
  file: string;
  /** What was done about the leases the file shows (recover-restored-leases.ts's report). */
  leases: Record<string, number>;
}

/**
 * The irrevocable-lease webhook also hears of a Redis restored from an older snapshot, at once (no
 * debounce: it is rare, and on-call must check what was recovered). What it says: both heads, the counts.
 */
export function createAuditRestoreAlerts(options: {
  url: string;
  brokerIssuer: string;
  logger: Logger;
  onUndelivered?: () => void;
}) {
  const webhook = createWebhook({
    url: options.url,
    name: 'audit restore alert',
    logger: options.logger,
    onUndelivered: options.onUndelivered,
  });
  return {
    restoreDetected(restore: AuditRestoreAlert) {
      const body = {
        event: 'tasklease.audit.restore_detected',
        broker: options.brokerIssuer,
        at: new Date().toISOString(),
        ...restore,
      };
      webhook.post(body, { redisHeadSeq: restore.redisHead.seq, fileHeadSeq: restore.fileHead.seq });
    },
    flush: () => webhook.settled(),
  };
}
