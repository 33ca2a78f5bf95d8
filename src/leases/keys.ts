/**
 * Every Redis key tasklease writes, in one place (docs/architecture.md tables them with owner and TTL).
 * `prefix` isolates deployments and tests sharing one Redis.
 */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  lease = (leaseId: string) => `${this.prefix}lease:${leaseId}`;
  task = (taskId: string) => `${this.prefix}task:${taskId}`;
  taskLeases = (taskId: string) => `${this.prefix}task-leases:${taskId}`;
  identityLeases = (identityKey: string) => `${this.prefix}identity-leases:${identityKey}`;
  grantLeases = (grant: string) => `${this.prefix}grant-leases:${grant}`;
  /**
   * The unsettled leases of one identity, for its quota: added at create, removed at settle (idempotent, so
   * nothing drifts). Leases from before this key existed are not in it and do not count.
   */
  identityUnsettled = (identityKey: string) => `${this.prefix}identity-unsettled:${identityKey}`;
  /** rate-limiter-flexible's own keys, one per identity. */
  rateLimit = () => `${this.prefix}rate`;
  /** Unsettled leases (active, revoking, irrevocable), scored by when the sweeper must act on them. */
  due = () => `${this.prefix}leases:due`;
  /** Leases whose revocation failed, scored by when they became irrevocable. */
  irrevocable = () => `${this.prefix}leases:irrevocable`;
  /** Settled leases scored by when they settled; purged with their index entries after retention. */
  settled = () => `${this.prefix}leases:settled`;
  /** JWT ids revoked before their `exp`; each key expires with the token. */
  revokedJti = (jti: string) => `${this.prefix}revoked-jti:${jti}`;
  /** An AWS role's deny list (aws-sts revocation): sessions to deny, what IAM has, the cut-off. */
  awsDenyState = (policyName: string, roleArn: string) => `${this.prefix}aws-deny:${policyName}:${roleArn}`;
  /** Held by the one writer of a role's deny policy, across every worker replica. */
  awsDenyLock = (policyName: string, roleArn: string) =>
    `${this.prefix}aws-deny-lock:${policyName}:${roleArn}`;
  /** A subject token already exchanged for a grant (RFC 8693 replay); expires with the token. */
  exchanged = (tokenSha256: string, grant: string) => `${this.prefix}exchanged:${tokenSha256}:${grant}`;
  audit = () => `${this.prefix}audit`;
  /** The lease ids one admin revocation matched (comma-separated), so its caller can follow them; one day. */
  revocation = (revocationId: string) => `${this.prefix}revocation:${revocationId}`;
  /** Signed seals over runs of audit events; each entry's id is the id of the last event it covers. */
  auditSeals = () => `${this.prefix}audit-seals`;
  /** Held by the one API replica sealing at a time (the seal's compare-and-set is what keeps it correct). */
  auditSealLock = () => `${this.prefix}audit-seal-lock`;
  /** One approval request (step-up, enrolment, entitlement); expires a retention period after it can matter. */
  approval = (approvalId: string) => `${this.prefix}approval:${approvalId}`;
  /** Every approval, scored by when it was requested: the approvers' inbox; purged after retention. */
  approvals = () => `${this.prefix}approvals`;
  /** Pending approvals and unused step-up approvals, scored by their deadline: the sweeper expires them. */
  approvalsDue = () => `${this.prefix}approvals:due`;
  /** A task's step-up requests, so asking again returns the open one; expires with the approvals. */
  taskApprovals = (taskId: string) => `${this.prefix}task-approvals:${taskId}`;
  /** One enrolment (a workload approved once); expires a retention period after the enrolment does. */
  enrolment = (enrolmentId: string) => `${this.prefix}enrolment:${enrolmentId}`;
  /** Every enrolment, scored by its expiry; entries past expiry + retention are purged. */
  enrolments = () => `${this.prefix}enrolments`;
  /** One entitlement (a grant approved for an enrolment); expires a retention period after it does. */
  entitlement = (entitlementId: string) => `${this.prefix}entitlement:${entitlementId}`;
  /** Every entitlement, scored by its expiry (the recertification listing reads it soonest first). */
  entitlements = () => `${this.prefix}entitlements`;
  /** One grant's entitlements, scored by expiry: issuance reads only the unexpired ones. */
  grantEntitlements = (grant: string) => `${this.prefix}grant-entitlements:${grant}`;
  /** BullMQ's own key prefix; BullMQ derives its keys from it and the queue name. */
  bullPrefix = () => `${this.prefix}bull`;
}

export const REVOCATION_QUEUE = 'revocations';
