import type { Command } from 'commander';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';

interface IssuedCredential {
  leaseId: string;
  provider: string;
  expiresAt: string;
  credential: Record<string, string>;
}

/**
 * `credential_process` for the AWS CLI and SDKs: one task-scoped STS session per call, printed as
 * https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html asks. The expiration
 * printed is the lease's end when that comes first, so the SDK asks again (a new lease) rather than keep
 * using keys the broker has revoked.
 */
export function registerCredentialProcessCommand(program: Command, env: () => Env) {
  program
    .command('credential-process')
    .description(
      'print a task-scoped AWS session as credential_process JSON (credential_process = tasklease credential-process --grant NAME)',
    )
    .requiredOption('--grant <name>', 'an aws-sts grant')
    .option('--task <id>', 'the declared task (default: TASKLEASE_TASK)')
    .option('--ttl <seconds>', 'lease TTL (clamped by the grant and the task)')
    .option('--reason <text>', 'recorded in the audit')
    .action(async (options: { grant: string; task?: string; ttl?: string; reason?: string }) => {
      const taskId = options.task ?? env().TASKLEASE_TASK;
      if (!taskId) throw new Error('give --task or set TASKLEASE_TASK to the task id');
      const ttlSeconds = options.ttl === undefined ? undefined : Number(options.ttl);
      if (ttlSeconds !== undefined && !(Number.isInteger(ttlSeconds) && ttlSeconds > 0))
        throw new Error('--ttl must be a whole number of seconds');
      const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
      const issued = await call<IssuedCredential>(
        'POST',
        `/v1/tasks/${encodeURIComponent(taskId)}/credentials`,
        { grant: options.grant, ttlSeconds, reason: options.reason },
      );
      const { credential } = issued;
      if (issued.provider !== 'aws-sts' || !credential.accessKeyId)
        throw new Error(`grant ${options.grant} is a ${issued.provider} grant, not aws-sts`);
      const expiration = Math.min(Date.parse(issued.expiresAt), Date.parse(credential.expiration ?? ''));
      process.stdout.write(
        `${JSON.stringify({
          Version: 1,
          AccessKeyId: credential.accessKeyId,
          SecretAccessKey: credential.secretAccessKey,
          SessionToken: credential.sessionToken,
          Expiration: new Date(expiration).toISOString(),
        })}\n`,
      );
    });
}
