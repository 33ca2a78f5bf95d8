import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type Metrics = ReturnType<typeof createMetrics>;

/** One registry per process, built in the wiring (no global default registry). */
export function createMetrics(counts: {
  unsettled: () => Promise<number>;
  irrevocable: () => Promise<number>;
}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tasklease_' });
  const safely = async (read: () => Promise<number>) => read().catch(() => Number.NaN);
  return {
    registry,
    issuanceSeconds: new Histogram({
      name: 'tasklease_issuance_duration_seconds',
      help: 'Credential issuance latency inside the broker (policy, mint, lease write, schedule, audit)',
      labelNames: ['provider'] as const,
      buckets: [0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    issued: new Counter({
      name: 'tasklease_credentials_issued_total',
      help: 'Credentials issued',
      labelNames: ['grant', 'provider'] as const,
      registers: [registry],
    }),
    denials: new Counter({
      name: 'tasklease_policy_denials_total',
      help: 'Requests the policy denied',
      labelNames: ['action'] as const,
      registers: [registry],
    }),
    rejectedTokens: new Counter({
      name: 'tasklease_identity_rejections_total',
      help: 'Identity tokens refused',
      labelNames: ['issuer'] as const,
      registers: [registry],
    }),
    refusalsUnaudited: new Counter({
      name: 'tasklease_refusals_unaudited_total',
      help: "Refusals beyond an identity's broker.refusalsPerMinutePerIdentity: answered 429, counted here, not audited one by one",
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    quotaRefusals: new Counter({
      name: 'tasklease_quota_refusals_total',
      help: 'Calls refused by a quota (open tasks per identity, active leases per identity, per task, in total)',
      labelNames: ['quota'] as const,
      registers: [registry],
    }),
    connectionsDropped: new Counter({
      name: 'tasklease_http_connections_dropped_total',
      help: 'Connections the API closed at once because it already held http.maxConnections',
      registers: [registry],
    }),
    settled: new Counter({
      name: 'tasklease_leases_settled_total',
      help: 'Leases revoked or expired',
      labelNames: ['state', 'provider'] as const,
      registers: [registry],
    }),
    revocationLagSeconds: new Histogram({
      name: 'tasklease_revocation_lag_seconds',
      help: 'Time from a lease expiry to its settlement by the worker',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
    revocationFailures: new Counter({
      name: 'tasklease_revocation_failures_total',
      help: 'Failed revocation attempts (final="true" when the lease became irrevocable)',
      labelNames: ['provider', 'final'] as const,
      registers: [registry],
    }),
    policyThreadExits: new Counter({
      name: 'tasklease_policy_thread_exits_total',
      help: 'Policy threads that died (decided on the event loop until replaced)',
      registers: [registry],
    }),
    approvals: new Counter({
      name: 'tasklease_approvals_total',
      help: 'Approval requests by kind, as they were requested and as they ended (approved, denied, expired)',
      labelNames: ['kind', 'status'] as const,
      registers: [registry],
    }),
    webhookUndelivered: new Counter({
      name: 'tasklease_webhook_undelivered_total',
      help: 'Webhook POSTs given up on after every attempt (webhook="irrevocable" or "approvals")',
      labelNames: ['webhook'] as const,
      registers: [registry],
    }),
    auditEventsSealed: new Counter({
      name: 'tasklease_audit_events_sealed_total',
      help: 'Audit events this process chained and signed into a seal',
      registers: [registry],
    }),
    auditSealingHalted: new Gauge({
      name: 'tasklease_audit_sealing_halted',
      help: '1 when this process stopped sealing because the seals in Redis were rewritten (see the error log)',
      registers: [registry],
    }),
    primaryChanges: new Counter({
      name: 'tasklease_redis_primary_changes_total',
      help: 'Times the Redis primary this process writes to changed (a failover, or a restart anew)',
      registers: [registry],
    }),
    writesReapplied: new Counter({
      name: 'tasklease_failover_writes_reapplied_total',
      help: 'Writes re-applied after a primary change because the new primary did not have them',
      registers: [registry],
    }),
    notReplicated: new Counter({
      name: 'tasklease_replica_ack_timeouts_total',
      help: 'Writes fewer replicas than broker.replicaAcks confirmed in time',
      registers: [registry],
    }),
    auditFailoverLosses: new Counter({
      name: 'tasklease_audit_failover_losses_total',
      help: 'Times a Redis failover took audit seals the new primary never got (sealing went on from the newest seal it holds)',
      registers: [registry],
    }),
    auditRestores: new Counter({
      name: 'tasklease_audit_restores_detected_total',
      help: "Times this worker's audit file was ahead of Redis's audit chain: Redis came back from an older snapshot",
      registers: [registry],
    }),
    auditEventsBeyondRedis: new Gauge({
      name: 'tasklease_audit_events_beyond_redis',
      help: 'Audit events the audit file held beyond Redis when the last restore was found (0: none found since start)',
      registers: [registry],
    }),
    leasesRecovered: new Counter({
      name: 'tasklease_audit_leases_recovered_total',
      help: 'Leases brought back from the audit file after a restore (action="restored", "revoking", "revoked_again", "revoke_requested")',
      labelNames: ['action'] as const,
      registers: [registry],
    }),
    auditEventsTrimmed: new Counter({
      name: 'tasklease_audit_events_trimmed_total',
      help: 'Audit events the retention trimmed from Redis (sealed, and held by every audit file)',
      registers: [registry],
    }),
    activeLeases: new Gauge({
      name: 'tasklease_active_leases',
      help: 'Unsettled leases (active, revoking, irrevocable)',
      registers: [registry],
      async collect() {
        this.set(await safely(counts.unsettled));
      },
    }),
    irrevocableLeases: new Gauge({
      name: 'tasklease_irrevocable_leases',
      help: 'Leases whose revocation failed and awaits retry',
      registers: [registry],
      async collect() {
        this.set(await safely(counts.irrevocable));
      },
    }),
  };
}
