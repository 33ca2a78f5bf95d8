import { serializeAuditEvent, type AuditEvent, type RawAuditEntry } from '../audit/audit-log';
import { isSettled, type Lease, type ProviderKind, type TaskOutcome } from '../domain/types';
import type { WorkerDeps } from './deps';
import { leaseAuditFields } from './request-revocation';

type Deps = Pick<WorkerDeps, 'leases' | 'tasks' | 'queue' | 'providers' | 'audit' | 'nowMs'>;

/** How a lease ended, as the audit file records it. */
interface Settlement {
  state: 'revoked' | 'expired' | 'force-closed';
  revocation: string;
  reason: string;
}

/** What the audit file shows happened to a lease after Redis's snapshot. */
interface Fate {
  /** From its `credential.issued`: the lease as it was written (Redis may lack it). */
  issued?: Lease;
  revokeReason?: string;
  settled?: Settlement;
}

export interface RecoveryReport {
  /** `credential.issued` events the file holds beyond Redis's head. */
  leasesInFile: number;
  /** Written back, due at their expiry. */
  restored: number;
  /** Written back revoking, due now: their task is not open, or the file shows them revoked. */
  restoredRevoking: number;
  /** Settled in the file after the snapshot: revoked again, and settled as the file records. */
  revokedAgain: number;
  /** Held by Redis as active, asked to be revoked in the file: asked again. */
  revocationsRequested: number;
  /** Lost, but their credential has ended at its source already: nothing left to revoke. */
  endedBefore: number;
  /** Completed in the file, open in Redis: completed again, so nothing more is issued for them. */
  tasksCompleted: number;
}

/** Fields of a `credential.issued` detail that are not the provider's handle. */
const NOT_HANDLE = new Set([
  'ttlSeconds',
  'provider',
  'requestReason',
  'scopes',
  'approvalId',
  'approvedBy',
  'entitlementId',
]);
const PROVIDERS: ReadonlySet<string> = new Set<ProviderKind>(['jwt', 'aws-sts', 'vault']);
const SETTLED_STATES: ReadonlySet<string> = new Set(['revoked', 'expired', 'force-closed']);
const OUTCOMES: ReadonlySet<string> = new Set<TaskOutcome>(['succeeded', 'failed', 'cancelled']);

/**
 * The lease a `credential.issued` event records. Its detail carries the backend's handle (an STS session,
 * a Vault accessor; a JWT's is its id, the lease id) beside what the request said.
 */
function leaseIssued(event: AuditEvent): Lease | null {
  const detail = event.detail ?? {};
  const provider = String(detail.provider ?? '');
  const ttlSeconds = Number(detail.ttlSeconds);
  if (!event.lease || !event.task || !event.grant || !PROVIDERS.has(provider) || !(ttlSeconds > 0))
    return null;
  const handle: Record<string, string> =
    provider === 'jwt'
      ? {}
      : Object.fromEntries(
          Object.entries(detail)
            .filter(([name]) => !NOT_HANDLE.has(name))
            .map(([name, value]) => [name, String(value)]),
        );
  return {
    id: event.lease,
    taskId: event.task,
    grant: event.grant,
    provider: provider as ProviderKind,
    issuer: event.issuer ?? '',
    subject: event.subject ?? '',
    state: 'active',
    createdAtMs: event.atMs,
    expiresAtMs: event.atMs + ttlSeconds * 1000,
    handle,
    credentialSha256: event.credentialSha256 ?? '',
    attempts: 0,
  };
}

/** Reads the file's events beyond Redis: each lease's fate, and the tasks completed. */
async function readFates(events: AsyncIterable<RawAuditEntry>) {
  const fates = new Map<string, Fate>();
  const completedTasks = new Map<string, TaskOutcome>();
  const fateOf = (leaseId: string) => fates.get(leaseId) ?? fates.set(leaseId, {}).get(leaseId)!;
  for await (const entry of events) {
    const event = JSON.parse(entry.json) as AuditEvent;
    if (event.type === 'task.completed' && event.task && OUTCOMES.has(event.reason ?? ''))
      completedTasks.set(event.task, event.reason as TaskOutcome);
    if (!event.lease) continue;
    if (event.type === 'credential.issued') {
      const lease = leaseIssued(event);
      if (lease) fateOf(event.lease).issued = lease;
    } else if (event.type === 'lease.revoke_requested')
      fateOf(event.lease).revokeReason ??= event.reason ?? 'revoked';
    else if (
      (event.type === 'lease.settled' || event.type === 'lease.force_closed') &&
      SETTLED_STATES.has(String(event.detail?.state))
    )
      fateOf(event.lease).settled = {
        state: event.detail?.state as Settlement['state'],
        revocation: String(event.detail?.revocation ?? ''),
        reason: event.reason ?? '',
      };
  }
  return { fates, completedTasks };
}

/**
 * After Redis came back from an older snapshot, brings back what the audit file shows it forgot, so every
 * credential issued since ends revoked or expired:
 * - a lease Redis lacks is written back (restoreLease), due at its expiry — or revoking and due now when its
 *   task is no longer open, or the file shows it revoked or asked to be;
 * - a lease the file shows settled is revoked again at once (idempotent: the JWT deny list, the role's deny
 *   policy in Redis were lost with the rest) and settled as the file records. That revocation happened
 *   before: if revoking it again fails, it is said in the lease's detail, never counted as a failure, never
 *   irrevocable, never alerted;
 * - a lease Redis holds as active that the file shows asked to be revoked is asked again;
 * - a task the file shows completed is completed again.
 * Idempotent: run twice (a crash before the file recorded the restore), it changes nothing more.
 */
export async function recoverRestoredLeases(
  deps: Deps,
  events: AsyncIterable<RawAuditEntry>,
  onWarning: (message: string) => void,
): Promise<RecoveryReport> {
  const { fates, completedTasks } = await readFates(events);
  const nowMs = deps.nowMs();
  const report: RecoveryReport = {
    leasesInFile: [...fates.values()].filter((fate) => fate.issued).length,
    restored: 0,
    restoredRevoking: 0,
    revokedAgain: 0,
    revocationsRequested: 0,
    endedBefore: 0,
    tasksCompleted: 0,
  };
  // First, so a lease written back for a completed task is written back revoking.
  for (const [taskId, outcome] of completedTasks)
    if ((await deps.tasks.complete(taskId, outcome, '', nowMs)) === 'completed') report.tasksCompleted++;
  const revokeNow: string[] = [];
  for (const [leaseId, fate] of fates) {
    const held = await deps.leases.get(leaseId);
    const lease = held ?? (fate.issued ? await writeBack(deps, fate, completedTasks, report, nowMs) : null);
    if (!lease || isSettled(lease.state)) continue;
    if (fate.settled) {
      await revokeAgain(deps, lease, fate.settled, nowMs, onWarning);
      report.revokedAgain++;
    } else if (held && (fate.revokeReason || completedTasks.has(held.taskId))) {
      const reason = fate.revokeReason ?? 'task completed';
      const requested = {
        type: 'lease.revoke_requested',
        atMs: nowMs,
        ...leaseAuditFields(held),
        actor: 'worker',
        reason,
        detail: { restored: true },
      } as const;
      if ((await deps.leases.markRevoking(leaseId, { reason, nowMs }, requested)) === 'started')
        report.revocationsRequested++;
      revokeNow.push(leaseId);
    } else if (lease.state === 'revoking') revokeNow.push(leaseId);
  }
  await deps.leases.confirmWrites();
  await deps.queue.revokeNow(revokeNow);
  return report;
}

/** The end of a credential at its source: an STS session can outlive its lease. */
const credentialEndMs = (lease: Lease) => Math.max(lease.expiresAtMs, Number(lease.handle.notAfterMs) || 0);

/** Writes a lease Redis lacks back; null when its credential ended at its source already. */
async function writeBack(
  deps: Deps,
  fate: Fate,
  completedTasks: ReadonlyMap<string, TaskOutcome>,
  report: RecoveryReport,
  nowMs: number,
): Promise<Lease | null> {
  const lease = fate.issued as Lease;
  if (credentialEndMs(lease) <= nowMs) {
    report.endedBefore++;
    return null;
  }
  const revokeReason = fate.settled
    ? fate.settled.reason || 'revoked before the restore'
    : (fate.revokeReason ?? (completedTasks.has(lease.taskId) ? 'task completed' : undefined));
  const auditEntry = serializeAuditEvent({
    type: 'lease.restored',
    atMs: nowMs,
    ...leaseAuditFields(lease),
    actor: 'worker',
    reason: 'Redis was restored from an older snapshot; the lease is written back from the audit file',
    detail: { expiresAt: new Date(lease.expiresAtMs).toISOString(), revoking: Boolean(revokeReason) },
  });
  // One the file shows settled is revoked again below, at once; due a minute on, the sweeper does it only
  // should this process die first, and does not race it (a failure there would count as a new one).
  const dueAtMs = fate.settled ? nowMs + 60_000 : revokeReason ? nowMs : lease.expiresAtMs;
  const result = await deps.leases.restore(lease, { nowMs, dueAtMs, auditEntry, revokeReason });
  if (result === 'exists') return deps.leases.get(lease.id);
  if (result === 'restored') {
    report.restored++;
    return lease;
  }
  report.restoredRevoking++;
  return { ...lease, state: 'revoking' };
}

/**
 * Revokes again a lease the file shows settled after the snapshot, and settles it as the file records. It
 * was revoked then: a failure now is reported in its detail and the log, not as a failed revocation.
 */
async function revokeAgain(
  deps: Deps,
  lease: Lease,
  settled: Settlement,
  nowMs: number,
  onWarning: (message: string) => void,
) {
  const before = 'settled before Redis was restored from an older snapshot (the audit file records it)';
  let revocation = settled.revocation;
  let detail = `${before}; revoked again after the restore`;
  try {
    const provider = deps.providers.get(lease.provider);
    if (!provider) throw new Error(`provider ${lease.provider} is not configured in this process`);
    const again = await provider.revoke(lease, { nowMs });
    revocation = again.revocation;
    if (again.detail) detail = `${detail}: ${again.detail}`;
  } catch (error) {
    const message = (error as Error).message.slice(0, 300);
    detail = `${before}; revoking it again after the restore failed (${message})`;
    onWarning(`lease ${lease.id}: ${detail}`);
  }
  const outcome = { state: settled.state, revocation, detail, reason: settled.reason };
  // Appended in settleLease's script, with the settlement, only when it settles the lease.
  await deps.leases.settle(lease, outcome, nowMs, {
    type: 'lease.settled',
    atMs: nowMs,
    ...leaseAuditFields(lease),
    actor: 'worker',
    reason: settled.reason,
    detail: { state: settled.state, revocation, revocationDetail: detail, restored: true },
  });
}
