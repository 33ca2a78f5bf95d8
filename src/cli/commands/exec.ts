import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { inheritedEnvironment, readVariable, type Env } from '../../config/env';
import { jobTokenSource, type JobTokenSource } from '../job-token';
import { exchange, type Exchanged } from '../token-exchange-client';

const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

const variableName = (grant: string, suffix: string) =>
  `TASKLEASE_${grant.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_${suffix.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;

/**
 * The environment a credential becomes for the command: AWS's variables, VAULT_TOKEN, or TASKLEASE_<GRANT>_*
 * for the rest. Two credentials may not claim the same variable (two AWS grants, two Vault tokens).
 */
export function credentialEnvironment(grant: string, issued: Exchanged): Record<string, string> {
  const credential = issued.credential ?? {};
  switch (issued.issued_token_type.split(':').pop()) {
    case 'aws-credentials':
      return {
        AWS_ACCESS_KEY_ID: String(credential.accessKeyId),
        AWS_SECRET_ACCESS_KEY: String(credential.secretAccessKey),
        AWS_SESSION_TOKEN: String(credential.sessionToken),
        AWS_CREDENTIAL_EXPIRATION: String(credential.expiration),
      };
    case 'vault-token':
      return { VAULT_TOKEN: String(credential.token) };
    case 'vault-secret': {
      const data = (credential.data ?? {}) as Record<string, unknown>;
      return {
        [variableName(grant, 'lease_id')]: String(credential.leaseId),
        ...Object.fromEntries(
          Object.entries(data).map(([key, value]) => [variableName(grant, key), String(value)]),
        ),
      };
    }
    default:
      return { [variableName(grant, 'token')]: issued.access_token };
  }
}

/** The command's exit status as a shell reports it: its code, or 128 + the signal's number. */
const exitStatus = (code: number | null, signal: NodeJS.Signals | null) =>
  code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);

async function completeTask(
  addr: string,
  source: JobTokenSource,
  taskId: string,
  status: number,
  signal: string | null,
) {
  const outcome = signal ? 'cancelled' : status === 0 ? 'succeeded' : 'failed';
  const summary = signal
    ? `tasklease exec: the command ended by ${signal}`
    : `tasklease exec: the command exited ${status}`;
  // A fresh token: the one exchanged may have expired while the command ran (GitHub's last minutes).
  const token = await source.read();
  const response = await fetch(new URL(`/v1/tasks/${taskId}/complete`, addr), {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ outcome, summary }),
  });
  // Completed before (a retry) is as good: its leases are revoked.
  if (!response.ok && response.status !== 409) {
    const body = (await response.json().catch(() => ({}))) as { error?: string; message?: string };
    throw new Error(`${response.status} ${body.error ?? ''} ${body.message ?? ''}`.trim());
  }
}

/**
 * `tasklease exec --grant G [--grant ...] -- COMMAND`: exchange the job's token for each grant, run the
 * command with the credentials in its environment, and complete the job's task when it exits, whatever its
 * exit code, so the credentials die with it. Signals reach the command; its exit status is ours.
 */
export function registerExecCommand(program: Command, env: () => Env) {
  program
    .command('exec')
    .description('run a command with the job’s credentials, revoked when it exits (RFC 8693 token exchange)')
    .requiredOption(
      '--grant <name>',
      'a grant to exchange for (repeatable)',
      (value: string, all: string[]) => [...all, value],
      [],
    )
    .option('--token-file <path>', 'read the job token from this file (re-read at completion)')
    .option('--token-env <name>', 'read the job token from this environment variable')
    .option('--audience <aud>', 'the audience to ask GitHub Actions for', 'tasklease')
    .option('--job <name>', 'this job’s name, to tell jobs of one run apart (default: $GITHUB_JOB)')
    .option('--ttl <seconds>', 'a shorter credential life than the grant’s maximum')
    .argument('<command...>', 'the command and its arguments, after --')
    .action(async (command: string[], options) => {
      const e = env();
      const source = jobTokenSource(options, e, readVariable);
      const job: string | undefined = options.job ?? e.GITHUB_JOB;
      const token = await source.read();
      const childEnv: Record<string, string> = {};
      let taskId: string | undefined;
      try {
        for (const grant of options.grant as string[]) {
          const issued = await exchange(e.TASKLEASE_ADDR, token, grant, { job, ttl: options.ttl });
          taskId = issued.task_id;
          const variables = credentialEnvironment(grant, issued);
          const clash = Object.keys(variables).find((name) => name in childEnv);
          if (clash)
            throw new Error(`grants ${grant} and an earlier one both set ${clash}: use one of them per exec`);
          Object.assign(childEnv, variables);
        }
      } catch (error) {
        // Whatever was issued before the failure dies now: nothing runs with half its credentials.
        if (taskId) {
          process.stderr.write(
            `tasklease: not running the command; revoking what task ${taskId} already got\n`,
          );
          await completeTask(e.TASKLEASE_ADDR, source, taskId, 1, null).catch(() => undefined);
        }
        throw error;
      }
      process.exitCode = await run(
        command,
        { ...inheritedEnvironment(), ...childEnv, TASKLEASE_TASK: taskId as string },
        async (status, signal) => {
          try {
            await completeTask(e.TASKLEASE_ADDR, source, taskId as string, status, signal);
          } catch (error) {
            process.stderr.write(
              `tasklease: completing task ${taskId} failed (${(error as Error).message}); its credentials stay valid ` +
                `until they expire unless an operator revokes them: tasklease lease revoke --task ${taskId}\n`,
            );
          }
        },
      );
    });
}

/** Runs the command, forwarding signals; `after` runs once it has exited; resolves with its exit status. */
function run(
  command: string[],
  childEnv: NodeJS.ProcessEnv,
  after: (status: number, signal: string | null) => Promise<void>,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = command as [string, ...string[]];
    const child = spawn(file, args, { stdio: 'inherit', env: childEnv });
    const forward = (signal: NodeJS.Signals) => () => void child.kill(signal);
    const handlers = FORWARDED_SIGNALS.map((signal) => [signal, forward(signal)] as const);
    for (const [signal, handler] of handlers) process.on(signal, handler);
    const done = async (status: number, signal: string | null) => {
      for (const [name, handler] of handlers) process.off(name, handler);
      await after(status, signal);
      resolve(status);
    };
    child.once('error', (error) => {
      process.stderr.write(`tasklease: cannot run ${file}: ${error.message}\n`);
      void done(127, null).catch(reject);
    });
    child.once('exit', (code, signal) => void done(exitStatus(code, signal), signal).catch(reject));
  });
}
