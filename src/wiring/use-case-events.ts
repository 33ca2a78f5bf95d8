import type { Logger } from '../observability/logger';
import type { ApprovalNotifications, IrrevocableAlerts } from '../observability/alerts';
import type { Metrics } from '../observability/metrics';
import type { UseCaseEvents } from '../usecases/deps';

export interface Outbound {
  alerts: IrrevocableAlerts | null;
  approvalNotifications: ApprovalNotifications | null;
}

/** What the use cases report, turned into metrics, log lines and webhooks. */
export function useCaseEvents(metrics: Metrics, logger: Logger, outbound: Outbound): UseCaseEvents {
  const { alerts, approvalNotifications } = outbound;
  return {
    irrevocable: (lease, reason, nowMs) =>
      alerts?.notify({
        leaseId: lease.id,
        grant: lease.grant,
        provider: lease.provider,
        task: lease.taskId,
        issuer: lease.issuer,
        subject: lease.subject,
        reason,
        atMs: nowMs,
      }),
    issued: (grant, provider, durationMs) => {
      metrics.issued.inc({ grant, provider });
      metrics.issuanceSeconds.observe({ provider }, durationMs / 1000);
    },
    denied: (action, reason, context) => {
      metrics.denials.inc({ action });
      logger.info({ action, reason, ...context }, 'policy denied');
    },
    quotaRefused: (quota) => metrics.quotaRefusals.inc({ quota }),
    settled: (lease, state, nowMs) => {
      metrics.settled.inc({ state, provider: lease.provider });
      if (state === 'expired')
        metrics.revocationLagSeconds.observe(Math.max(0, nowMs - lease.expiresAtMs) / 1000);
    },
    approvalRequested: (approval) => {
      metrics.approvals.inc({ kind: approval.kind, status: 'requested' });
      logger.info(
        { approvalId: approval.id, kind: approval.kind, grant: approval.grant, task: approval.taskId },
        'approval requested',
      );
      approvalNotifications?.requested(approval);
    },
    approvalSettled: (approval, status) => metrics.approvals.inc({ kind: approval.kind, status }),
    revocationFailed: (leaseId, provider, error, final) => {
      metrics.revocationFailures.inc({ provider, final: String(final) });
      logger.warn(
        { leaseId, provider, error, final },
        final ? 'revocation failed: lease is irrevocable' : 'revocation attempt failed',
      );
    },
  };
}
