import type { Approval } from '../approvals/approval';
import type { ApprovalStore } from '../approvals/approval-store';
import type { ExchangeReplay } from '../identity/exchange-replay';
import type { AuditLog } from '../audit/audit-log';
import type { RefusalAudit } from '../audit/refusal-audit';
import type { Config } from '../config/schema';
import type { Lease } from '../domain/types';
import type { EntitlementStore } from '../entitlements/entitlement-store';
import type { LeaseStore } from '../leases/lease-store';
import type { RevocationLog } from '../leases/revocation-log';
import type { RevocationQueue } from '../leases/revocation-queue';
import type { Policy } from '../policy/policy-threads';
import type { ProviderRegistry, RevokerRegistry } from '../providers/provider';
import type { SigningKeyRing } from '../signing/signing-keys';
import type { TaskStore } from '../tasks/task-store';

export type QuotaName = 'open_tasks_per_identity' | 'leases_per_identity' | 'leases_per_task' | 'leases';

/** Hooks the use cases report to (metrics, logs); the wiring decides what they do. */
export interface UseCaseEvents {
  issued(grant: string, provider: string, durationMs: number): void;
  denied(action: string, reason: string, context: Record<string, string>): void;
  /** A call refused by a quota: open tasks per identity, active leases per identity or task, or in total. */
  quotaRefused(quota: QuotaName): void;
  settled(lease: { id: string; provider: string; expiresAtMs: number }, state: string, nowMs: number): void;
  revocationFailed(leaseId: string, provider: string, error: string, final: boolean): void;
  /** A lease just became irrevocable (after the failure above): on-call must hear of it. */
  irrevocable(lease: Lease, reason: string, nowMs: number): void;
  /** A step-up request is waiting for an approver (the approvals webhook, a metric). */
  approvalRequested(approval: Approval): void;
  /** An approval was decided or expired. */
  approvalSettled(approval: Pick<Approval, 'id' | 'kind'>, status: 'approved' | 'denied' | 'expired'): void;
}

/** What the API and the worker both hold, over the same stores. */
export interface SharedDeps {
  config: Config;
  tasks: TaskStore;
  leases: LeaseStore;
  queue: RevocationQueue;
  revocations: RevocationLog;
  audit: AuditLog;
  approvals: ApprovalStore;
  entitlements: EntitlementStore;
  events: UseCaseEvents;
  nowMs: () => number;
  /** Task, approval and revocation ids (domain/ids.ts). */
  newId: () => string;
  /** Lease ids: shorter, they are stored about eight times per lease (domain/ids.ts). */
  newLeaseId: () => string;
}

/** Everything an API use case may need; each one takes only the `Pick` it uses. */
export interface BrokerDeps extends SharedDeps {
  policy: Policy;
  providers: ProviderRegistry;
  exchangeReplay: ExchangeReplay;
  signingKeys: SigningKeyRing;
  /** Refusals audited within each identity's budget; beyond it, 429 too_many_refusals. */
  refusals: RefusalAudit;
}

/** The worker's: it revokes and settles, so it holds revokers only, no policy engine and no signing keys. */
export interface WorkerDeps extends SharedDeps {
  providers: RevokerRegistry;
}
