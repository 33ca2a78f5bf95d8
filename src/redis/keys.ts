import type { RedisTopology } from '../config/redis-target';

/**
 * Every Redis key tasklease writes, in one place: nothing else names a key, and every key a script touches
 * is built here and passed in `KEYS` (docs/architecture.md tables them with owner and TTL). `prefix`
 * isolates deployments and tests sharing one Redis; on a cluster it carries a hash tag (`{tl}:`), so every
 * key lands in one slot and every script, MULTI and pipeline stays there.
 */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  lease = (leaseId: string) => `${this.prefix}lease:${leaseId}`;
  task = (taskId: string) => `${this.prefix}task:${taskId}`;
  taskLeases = (taskId: string) => `${this.prefix}task-leases:${taskId}`;
  identityLeases = (identityKey: string) => `${this.prefix}identity-leases:${identityKey}`;
  grantLeases = (grant: string) => `${this.prefix}grant-leases:${grant}`;
  /** The unsettled leases of one identity, for its quota: added at create, removed at settle (idempotent). */
  identityUnsettled = (identityKey: string) => `${this.prefix}identity-unsettled:${identityKey}`;
  /**
   * One identity's open tasks scored by their expiry, for `broker.maxOpenTasksPerIdentity`: added at create,
   * removed at completion, pruned past expiry by the next create; expires with its latest task.
   */
  identityOpenTasks = (identityKey: string) => `${this.prefix}identity-open-tasks:${identityKey}`;
  /** rate-limiter-flexible's count of one identity's audited refusals this minute (refusal-audit.ts). */
  refusals = () => `${this.prefix}refusals`;
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
  /** How far each worker's audit file has durably copied the chain: the retention trims no further. */
  auditCopies = () => `${this.prefix}audit-copies`;
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

/**
 * The hash tag Redis Cluster hashes a key by: the text between the first `{` and the first `}` after it,
 * when that is not empty (Redis's own rule, so `{}x` has none and `{a}{b}` is tagged `a`).
 */
export function hashTagOf(key: string): string | null {
  const open = key.indexOf('{');
  if (open < 0) return null;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : null;
}

export const DEFAULT_PREFIX = 'tl:';
export const DEFAULT_CLUSTER_PREFIX = '{tl}:';

export class KeyPrefixError extends Error {
  override name = 'KeyPrefixError';
}

/**
 * The key prefix for a topology: the configured one, else `tl:` (`{tl}:` on a cluster). On a cluster a
 * prefix without a hash tag is refused: its keys would scatter over slots, and the scripts that keep a
 * lease, its indexes and its audit event in one atomic step could not run.
 */
export function resolveKeyPrefix(configured: string | undefined, topology: RedisTopology): string {
  if (topology !== 'cluster') return configured ?? DEFAULT_PREFIX;
  const prefix = configured ?? DEFAULT_CLUSTER_PREFIX;
  if (!hashTagOf(prefix))
    throw new KeyPrefixError(
      `broker.redisPrefix "${prefix}" has no hash tag: on Redis Cluster every tasklease key must share one ` +
        `slot, so the prefix must carry a tag such as "{tl}:" (the default there)`,
    );
  return prefix;
}
