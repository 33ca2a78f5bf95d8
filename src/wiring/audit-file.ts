import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { AuditSinkStoppedError, startAuditFileSink } from '../audit/audit-file-sink';
import type { DetectedRestore } from '../audit/audit-file-restore';
import { pointDetail } from '../audit/audit-gaps';
import { startAuditRetention, type TrimReport } from '../audit/audit-retention';
import type { Config } from '../config/schema';
import { createAuditRestoreAlerts } from '../observability/alerts';
import type { Logger } from '../observability/logger';
import { recoverRestoredLeases, type RecoveryReport } from '../usecases/recover-restored-leases';
import { StartupError } from './startup-error';
import type { WorkerContext } from './worker-context';

/** The retention looks this often: a quarter of the retention, within [sealIntervalMs, 60 s]. */
const trimIntervalMs = (config: Config) =>
  Math.min(60_000, Math.max(config.audit.sealIntervalMs, ((config.audit.retentionSeconds ?? 0) * 1000) / 4));

/**
 * `audit.file` in the worker: the file sink, the stream's retention (which trims only what every file holds)
 * and, when the file is found ahead of Redis, the recovery of what Redis forgot. Start-up fails (the worker
 * exits) when the file is not one it may write to.
 */
export async function startAuditFile(context: WorkerContext, config: Config, logger: Logger) {
  const { shared, deps } = context;
  const { metrics } = shared;
  const file = config.audit.file as string;
  const alerts = config.alerts.irrevocableWebhook
    ? createAuditRestoreAlerts({
        url: config.alerts.irrevocableWebhook,
        brokerIssuer: config.broker.issuer,
        logger,
        onUndelivered: () => metrics.webhookUndelivered.inc({ webhook: 'irrevocable' }),
      })
    : null;
  const retention = startAuditRetention({
    redis: shared.redis,
    keys: shared.keys,
    audit: deps.audit,
    copyName: `${hostname()}:${resolve(file)}`,
    retentionSeconds: config.audit.retentionSeconds,
    intervalMs: trimIntervalMs(config),
    nowMs: deps.nowMs,
    onTrimmed: (report: TrimReport) => {
      metrics.auditEventsTrimmed.inc(report.events);
      logger.info(
        {
          anchorSeq: report.anchor.seq,
          anchorId: report.anchor.id,
          events: report.events,
          keptIn: report.keptIn,
        },
        'audit events trimmed from Redis (kept in the audit files)',
      );
    },
    onError: (error) => logger.warn({ err: (error as Error).message }, 'audit retention failed; retrying'),
  });

  /** Recovers what the file shows Redis forgot, then says so: log, metrics, audit event, webhook. */
  async function onRestore(restore: DetectedRestore) {
    const warn = (message: string) => logger.warn({ detail: message }, 'audit restore');
    const report = await recoverRestoredLeases(deps, restore.lostEvents(), warn);
    countRecovered(report);
    metrics.auditRestores.inc();
    metrics.auditEventsBeyondRedis.set(restore.eventsBeyond);
    const { redisHead, fileHead, eventsBeyond } = restore;
    logger.error(
      {
        redisHeadSeq: redisHead.seq,
        redisHeadId: redisHead.id,
        fileHeadSeq: fileHead.seq,
        fileHeadId: fileHead.id,
        eventsBeyond,
        file,
        ...report,
      },
      'Redis was restored from an older snapshot: the audit file is ahead of Redis; the leases it shows were recovered',
    );
    await deps.audit.append({
      type: 'audit.restored',
      atMs: deps.nowMs(),
      actor: 'worker',
      reason: 'Redis was restored from an older snapshot: the audit file is ahead of its audit chain',
      detail: {
        ...pointDetail('redisHead', redisHead),
        ...pointDetail('fileHead', fileHead),
        eventsBeyond,
        file,
        ...report,
      },
    });
    alerts?.restoreDetected({ redisHead, fileHead, eventsBeyond, file, leases: { ...report } });
  }

  function countRecovered(report: RecoveryReport) {
    metrics.leasesRecovered.inc({ action: 'restored' }, report.restored);
    metrics.leasesRecovered.inc({ action: 'revoking' }, report.restoredRevoking);
    metrics.leasesRecovered.inc({ action: 'revoked_again' }, report.revokedAgain);
    metrics.leasesRecovered.inc({ action: 'revoke_requested' }, report.revocationsRequested);
  }

  const sink = await startAuditFileSink({
    path: file,
    audit: deps.audit,
    brokerIssuer: config.broker.issuer,
    log: shared.keys.prefix,
    intervalMs: config.audit.sealIntervalMs,
    nowMs: deps.nowMs,
    onError: (error) =>
      error instanceof AuditSinkStoppedError
        ? logger.error({ err: error.message }, 'audit file sink stopped: the log in Redis was rewritten')
        : logger.warn({ err: (error as Error).message }, 'audit file sink failed; retrying'),
    onWarning: (message) => logger.warn({ detail: message }, 'audit file sink'),
    onRestore,
    onWritten: (head) =>
      void retention
        .recordCopy(head)
        .catch((error: Error) => logger.warn({ err: error.message }, 'audit file progress not recorded')),
  }).catch(async (error: Error) => {
    await retention.stop();
    throw new StartupError(`cannot keep the audit file ${file}: ${error.message}`);
  });
  return {
    async close() {
      await sink.stop();
      await retention.stop();
      await alerts?.flush();
    },
  };
}
