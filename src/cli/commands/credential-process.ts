import type { Command } from 'commander';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { readVariable, type Env } from '../../config/env';
import { createApiClient } from '../api-client';
import { currentJobToken, jobTokenSource, type JobTokenSource } from '../job-token';
import { wholeSeconds } from '../output';
import { awaitStepUp, DEFAULT_APPROVAL_TIMEOUT_SECONDS, type PendingStepUp } from '../step-up-wait';
import { exchangeWithStepUp } from '../token-exchange-client';

interface IssuedCredential {
  leaseId: string;
  provider: string;
  expiresAt: string;
  credential: Record<string, string>;
}

interface ProcessCredential {
  Version: 1;
  AccessKeyId: string;
  SecretAccessKey: string;
  SessionToken: string;
  Expiration: string;
}

/** A cached session is handed out again while it has at least this long left. */
const REUSE_MIN_MS = 60_000;

/**
 * The cache: AWS SDKs ask for fresh credentials 5 (JavaScript) to 15 (botocore) minutes before they expire,
 * on every call in that window. Without a cache each of those calls would take a new lease; with it, one
 * lease serves until a minute before its end. One file per broker, task, grant and TTL, readable by its
 * owner only, as the AWS CLI caches its own assumed-role sessions.
 */
function cacheFile(env: Env, key: unknown[]): string {
  const dir = env.TASKLEASE_CACHE_DIR ?? path.join(homedir(), '.cache', 'tasklease');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const name = createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 32);
  return path.join(dir, `aws-${name}.json`);
}

function readCached(file: string, nowMs: number): ProcessCredential | null {
  try {
    const cached = JSON.parse(readFileSync(file, 'utf8')) as ProcessCredential;
    return Date.parse(cached.Expiration) - nowMs > REUSE_MIN_MS ? cached : null;
  } catch {
    return null;
  }
}

function writeCached(file: string, value: ProcessCredential): void {
  const temporary = `${file}.${process.pid}`;
  writeFileSync(temporary, JSON.stringify(value), { mode: 0o600 });
  renameSync(temporary, file);
}

/**
 * `credential_process` for the AWS CLI and SDKs: a task-scoped STS session, printed as
 * https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html asks. The expiration
 * printed is the lease's end when that comes first, so no SDK uses keys past the lease.
 */
interface Options {
  grant: string;
  task?: string;
  ttl?: string;
  reason?: string;
  cache: boolean;
  tokenFile?: string;
  tokenEnv?: string;
  audience: string;
  job?: string;
  approvalTimeout: number;
}

/** The claims that name a job, read (unverified: the broker verifies) to key the cache per job. */
const JOB_CLAIMS = [
  'iss',
  'sub',
  'repository',
  'run_id',
  'run_attempt',
  'job_workflow_ref',
  'project_path',
  'pipeline_id',
  'job_id',
];

function jobOfToken(token: string): unknown[] {
  try {
    const payload = decodeJwt(token);
    const pod = (payload['kubernetes.io'] as { pod?: { uid?: string } } | undefined)?.pod?.uid;
    return [...JOB_CLAIMS.map((claim) => payload[claim] ?? null), pod ?? null];
  } catch {
    return [createHash('sha256').update(token).digest('hex')];
  }
}

function toProcessCredential(credential: Record<string, unknown>, expiresAt: string): ProcessCredential {
  const expirationMs = Math.min(Date.parse(expiresAt), Date.parse(String(credential.expiration ?? '')));
  return {
    Version: 1,
    AccessKeyId: String(credential.accessKeyId),
    SecretAccessKey: String(credential.secretAccessKey ?? ''),
    SessionToken: String(credential.sessionToken ?? ''),
    Expiration: new Date(expirationMs).toISOString(),
  };
}

/** A 202 from POST /v1/tasks/{id}/credentials: a step-up request, not a credential. */
const isPending = (answer: IssuedCredential | PendingStepUp): answer is PendingStepUp =>
  !('leaseId' in answer) && 'approvalId' in answer;

/**
 * In a declared task (TASKLEASE_TOKEN + the task): POST /v1/tasks/{id}/credentials. A grant that needs a
 * step-up approval answers 202: wait for it with the same token, then ask again with its `approvalId`.
 */
async function fromTask(e: Env, taskId: string, options: Options, ttlSeconds: number | undefined) {
  const call = createApiClient(e.TASKLEASE_ADDR, e.TASKLEASE_TOKEN);
  const path = `/v1/tasks/${encodeURIComponent(taskId)}/credentials`;
  const body = { grant: options.grant, ttlSeconds, reason: options.reason };
  let issued = await call<IssuedCredential | PendingStepUp>('POST', path, body);
  if (isPending(issued)) {
    await awaitStepUp(
      { ...issued, grant: options.grant },
      {
        addr: e.TASKLEASE_ADDR,
        token: async () => e.TASKLEASE_TOKEN ?? '',
        timeoutSeconds: options.approvalTimeout,
      },
    );
    issued = await call<IssuedCredential | PendingStepUp>('POST', path, {
      ...body,
      approvalId: issued.approvalId,
    });
    if (isPending(issued))
      throw new Error(`grant ${options.grant}: approval ${issued.approvalId} not usable`);
  }
  if (issued.provider !== 'aws-sts' || !issued.credential.accessKeyId)
    throw new Error(`grant ${options.grant} is a ${issued.provider} grant, not aws-sts`);
  return toProcessCredential(issued.credential, issued.expiresAt);
}

/** In a CI job (its OIDC token, as `tasklease exec` finds it): RFC 8693 exchange into the job's task. */
async function fromJob(e: Env, token: () => Promise<string>, options: Options) {
  const issued = await exchangeWithStepUp(
    e.TASKLEASE_ADDR,
    options.grant,
    { job: options.job ?? e.GITHUB_JOB, ttl: options.ttl },
    { addr: e.TASKLEASE_ADDR, token, timeoutSeconds: options.approvalTimeout },
  );
  if (!issued.issued_token_type.endsWith(':aws-credentials') || !issued.credential)
    throw new Error(`grant ${options.grant} does not issue AWS credentials (${issued.issued_token_type})`);
  return toProcessCredential(issued.credential, issued.expires_at);
}

export function registerCredentialProcessCommand(program: Command, env: () => Env) {
  program
    .command('credential-process')
    .description(
      'print a task-scoped AWS session as credential_process JSON (credential_process = tasklease credential-process --grant NAME)',
    )
    .requiredOption('--grant <name>', 'an aws-sts grant')
    .option(
      '--task <id>',
      'the declared task (default: TASKLEASE_TASK); without one, the CI job token is exchanged',
    )
    .option('--ttl <seconds>', "lease TTL (default: the grant's maximum; clamped by the grant and the task)")
    .option('--reason <text>', 'recorded in the audit')
    .option('--token-file <path>', 'CI job token file (token exchange, as tasklease exec)')
    .option('--token-env <name>', 'CI job token variable (token exchange, as tasklease exec)')
    .option('--audience <aud>', 'the audience to ask GitHub Actions for', 'tasklease')
    .option('--job <name>', 'this job’s name (default: $GITHUB_JOB)')
    .option(
      '--approval-timeout <seconds>',
      'how long to wait for a step-up approval before giving up, exit 7 (default ' +
        `${DEFAULT_APPROVAL_TIMEOUT_SECONDS}; some AWS SDKs stop credential_process sooner: see docs/token-exchange.md)`,
      wholeSeconds,
      DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    )
    .option(
      '--no-cache',
      'always take a new lease (by default a session is reused until a minute before its end)',
    )
    .action(async (options: Options) => {
      const e = env();
      const taskId = options.task ?? e.TASKLEASE_TASK;
      const ttlSeconds = options.ttl === undefined ? undefined : Number(options.ttl);
      if (ttlSeconds !== undefined && !(Number.isInteger(ttlSeconds) && ttlSeconds > 0))
        throw new Error('--ttl must be a whole number of seconds');
      // A declared task when one is named; otherwise the CI job's own token, exchanged.
      const source = taskId ? null : jobTokenSource(options, e, readVariable);
      const jobToken = source ? await source.read() : null;
      const who = taskId
        ? ['task', taskId]
        : ['job', ...jobOfToken(jobToken as string), options.job ?? e.GITHUB_JOB ?? null];
      const file = cacheFile(e, [e.TASKLEASE_ADDR, ...who, options.grant, ttlSeconds ?? null]);
      const cached = options.cache ? readCached(file, Date.now()) : null;
      if (cached) {
        process.stdout.write(`${JSON.stringify(cached)}\n`);
        return;
      }
      const printed = taskId
        ? await fromTask(e, taskId, options, ttlSeconds)
        : await fromJob(e, currentJobToken(jobToken as string, source as JobTokenSource), options);
      if (options.cache) writeCached(file, printed);
      process.stdout.write(`${JSON.stringify(printed)}\n`);
    });
}
