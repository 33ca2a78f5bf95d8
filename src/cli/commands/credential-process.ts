import type { Command } from 'commander';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';

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
export function registerCredentialProcessCommand(program: Command, env: () => Env) {
  program
    .command('credential-process')
    .description(
      'print a task-scoped AWS session as credential_process JSON (credential_process = tasklease credential-process --grant NAME)',
    )
    .requiredOption('--grant <name>', 'an aws-sts grant')
    .option('--task <id>', 'the declared task (default: TASKLEASE_TASK)')
    .option('--ttl <seconds>', "lease TTL (default: the grant's maximum; clamped by the grant and the task)")
    .option('--reason <text>', 'recorded in the audit')
    .option(
      '--no-cache',
      'always take a new lease (by default a session is reused until a minute before its end)',
    )
    .action(
      async (options: { grant: string; task?: string; ttl?: string; reason?: string; cache: boolean }) => {
        const taskId = options.task ?? env().TASKLEASE_TASK;
        if (!taskId) throw new Error('give --task or set TASKLEASE_TASK to the task id');
        const ttlSeconds = options.ttl === undefined ? undefined : Number(options.ttl);
        if (ttlSeconds !== undefined && !(Number.isInteger(ttlSeconds) && ttlSeconds > 0))
          throw new Error('--ttl must be a whole number of seconds');
        const file = cacheFile(env(), [env().TASKLEASE_ADDR, taskId, options.grant, ttlSeconds ?? null]);
        const cached = options.cache ? readCached(file, Date.now()) : null;
        if (cached) {
          process.stdout.write(`${JSON.stringify(cached)}\n`);
          return;
        }
        const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
        const issued = await call<IssuedCredential>(
          'POST',
          `/v1/tasks/${encodeURIComponent(taskId)}/credentials`,
          { grant: options.grant, ttlSeconds, reason: options.reason },
        );
        const { credential } = issued;
        if (issued.provider !== 'aws-sts' || !credential.accessKeyId)
          throw new Error(`grant ${options.grant} is a ${issued.provider} grant, not aws-sts`);
        const expirationMs = Math.min(Date.parse(issued.expiresAt), Date.parse(credential.expiration ?? ''));
        const printed: ProcessCredential = {
          Version: 1,
          AccessKeyId: credential.accessKeyId,
          SecretAccessKey: credential.secretAccessKey ?? '',
          SessionToken: credential.sessionToken ?? '',
          Expiration: new Date(expirationMs).toISOString(),
        };
        if (options.cache) writeCached(file, printed);
        process.stdout.write(`${JSON.stringify(printed)}\n`);
      },
    );
}
