import type { Approval } from '../approvals/approval';
import {
  entitlementStatus,
  recordStatus,
  type Enrolment,
  type Entitlement,
  type RecordStatus,
} from '../entitlements/records';
import type { BrokerDeps } from './deps';

type Deps = Pick<BrokerDeps, 'approvals' | 'entitlements'>;

export interface DescribedEnrolment {
  enrolment: Enrolment;
  approval: Approval | null;
  status: RecordStatus;
}

export interface DescribedEntitlement {
  entitlement: Entitlement;
  approval: Approval | null;
  status: RecordStatus;
  /** Null when the enrolment's record is gone (past its retention): the entitlement is then suspended. */
  enrolment: DescribedEnrolment | null;
}

async function approvalsById(deps: Deps, ids: readonly string[]) {
  const approvals = await deps.approvals.getMany([...new Set(ids)]);
  return new Map(approvals.map((approval) => [approval.id, approval]));
}

/** Enrolments with their approvals and their status as of `nowMs`. */
export async function describeEnrolments(
  deps: Deps,
  enrolments: readonly Enrolment[],
  nowMs: number,
): Promise<DescribedEnrolment[]> {
  const approvals = await approvalsById(
    deps,
    enrolments.map((enrolment) => enrolment.approvalId),
  );
  return enrolments.map((enrolment) => {
    const approval = approvals.get(enrolment.approvalId) ?? null;
    return { enrolment, approval, status: recordStatus(enrolment, approval, nowMs) };
  });
}

/**
 * Entitlements with their approvals, their enrolments and their status as of `nowMs`: active only while
 * approved, unexpired, unrevoked, and under an active enrolment.
 */
export async function describeEntitlements(
  deps: Deps,
  entitlements: readonly Entitlement[],
  nowMs: number,
): Promise<DescribedEntitlement[]> {
  if (entitlements.length === 0) return [];
  const enrolmentIds = [...new Set(entitlements.map((entitlement) => entitlement.enrolmentId))];
  const [approvals, enrolments] = await Promise.all([
    approvalsById(
      deps,
      entitlements.map((entitlement) => entitlement.approvalId),
    ),
    deps.entitlements.enrolments(enrolmentIds).then((found) => describeEnrolments(deps, found, nowMs)),
  ]);
  const enrolmentById = new Map(enrolments.map((described) => [described.enrolment.id, described]));
  return entitlements.map((entitlement) => {
    const approval = approvals.get(entitlement.approvalId) ?? null;
    const enrolment = enrolmentById.get(entitlement.enrolmentId) ?? null;
    const own = recordStatus(entitlement, approval, nowMs);
    return {
      entitlement,
      approval,
      enrolment,
      status: entitlementStatus(own, enrolment?.status ?? 'expired'),
    };
  });
}
