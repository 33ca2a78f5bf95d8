import { BrokerError } from '../domain/errors';
import type { Identity, Task } from '../domain/types';
import { bindJob, type JobBinding } from '../identity/job-binding';
import type { BrokerDeps } from './deps';
import { auditDeclared, authorizeDeclaration, openTasksQuotaError } from './declare-task';
import { issueCredential, type IssueDeps } from './issue-credential';

export interface ExchangeInput {
  /** The grant named by `audience`. */
  grant: string;
  /** `scope`, split: narrows a jwt grant's scopes. */
  scopes?: string[];
  /** The job's name as the client sees it (GITHUB_JOB...): tells jobs of one run apart. */
  job?: string;
  ttlSeconds?: number;
  /** A step-up approval, once approved: the exchange is repeated with it (`approval_id`). */
  approvalId?: string;
}

type Deps = IssueDeps & Pick<BrokerDeps, 'exchangeReplay' | 'signingKeys'>;

/**
 * RFC 8693 for a CI job: verified subject token (by the caller) → its job → replay mark → the job's task,
 * opened on first use → issue, as any credential (policy, provider, lease, revocation). The job is the task:
 * every exchange of one job lands in the same task, and completing it revokes everything the job got.
 */
export async function exchangeToken(deps: Deps, identity: Identity, input: ExchangeInput) {
  if (!Object.hasOwn(deps.config.grants, input.grant))
    throw new BrokerError('invalid_target', 'audience names no configured grant');
  const issuer = deps.config.issuers.find((candidate) => candidate.name === identity.issuer);
  const job = issuer ? bindJob(identity, issuer, input.job) : { missing: ['issuer'] };
  if ('missing' in job)
    throw new BrokerError('invalid_grant', 'the subject token names no job', {
      detail: `missing job claims: ${job.missing.join(', ')}`,
    });

  const nowMs = deps.nowMs();
  const replay = deps.config.tokenExchange.replay === 'once-per-grant';
  if (
    replay &&
    !(await deps.exchangeReplay.take(identity.tokenSha256, input.grant, identity.expiresAtMs, nowMs))
  ) {
    // A replayed job token is what a leaked one looks like: counted, audited, refused.
    const reason = 'subject token replayed: already exchanged for this grant';
    deps.events.denied('issue', reason, {
      issuer: identity.issuer,
      subject: identity.subject,
      grant: input.grant,
    });
    await deps.refusals.record({
      type: 'credential.denied',
      atMs: nowMs,
      issuer: identity.issuer,
      subject: identity.subject,
      task: job.taskId,
      grant: input.grant,
      tokenSha256: identity.tokenSha256,
      reason,
    });
    throw new BrokerError('invalid_grant', 'this subject token was already exchanged for this grant');
  }
  try {
    const task = await openJobTask(deps, identity, job, nowMs);
    const issued = await issueCredential(deps, identity, task.id, {
      grant: input.grant,
      ttlSeconds: input.ttlSeconds,
      scopes: input.scopes,
      reason: 'token exchange (RFC 8693)',
      approvalId: input.approvalId,
    });
    // Waiting on a step-up approval is not an exchange: the token may be exchanged again with the approval.
    if ('pending' in issued && replay)
      await deps.exchangeReplay.giveBack(identity.tokenSha256, input.grant).catch(() => undefined);
    return { ...issued, taskId: task.id };
  } catch (error) {
    // Nothing was issued: the token may be exchanged again (a transient failure, a policy being fixed).
    if (replay) await deps.exchangeReplay.giveBack(identity.tokenSha256, input.grant).catch(() => undefined);
    throw error;
  }
}

/** The job's task: the one already open, or a new one the policy lets the job declare. */
async function openJobTask(deps: Deps, identity: Identity, job: JobBinding, nowMs: number): Promise<Task> {
  const existing = await deps.tasks.get(job.taskId, nowMs);
  if (existing) return existing;
  const { config } = deps;
  const ttlSeconds = Math.min(config.tokenExchange.taskTtlSeconds, config.broker.maxTaskTtlSeconds);
  const task: Task = {
    id: job.taskId,
    issuer: identity.issuer,
    subject: identity.subject,
    kind: identity.kind,
    purpose: jobPurpose(identity, job),
    ticket: '',
    ref: job.claims.ref ?? '',
    grants: [],
    createdAtMs: nowMs,
    expiresAtMs: nowMs + ttlSeconds * 1000,
    state: 'open',
    jobKey: job.key,
    job: job.claims,
  };
  const reason = await authorizeDeclaration(deps, identity, task, ttlSeconds, nowMs);
  // Two exchanges of one job racing: the first creates the task, the other uses it.
  const created = await deps.tasks.create(task, nowMs);
  if (created === 'task_quota') throw openTasksQuotaError(deps);
  if (created === 'created') await auditDeclared(deps, identity, task, { reason, ttlSeconds, nowMs });
  return task;
}

/** A readable purpose for the task listing, e.g. `CI job: acme/api run 6123456789 attempt 2 (deploy)`. */
function jobPurpose(identity: Identity, job: JobBinding): string {
  const c = job.claims;
  const name = c.job ? ` (${c.job})` : '';
  switch (identity.kind) {
    case 'github-actions':
      return `CI job: ${c.repository} run ${c.run_id} attempt ${c.run_attempt}${name}`;
    case 'gitlab':
      return `CI job: ${c.project_path} pipeline ${c.pipeline_id} job ${c.job_id}${name}`;
    case 'kubernetes':
      return `pod: ${c['kubernetes.io.namespace']}/${c['kubernetes.io.pod.name'] ?? c['kubernetes.io.pod.uid']}${name}`;
    default:
      return `token exchange by ${identity.subject}${name}`;
  }
}
