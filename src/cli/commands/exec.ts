import type { Command } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import { inheritedEnvironment, readVariable, type Env } from '../../config/env';
import { wholeSeconds } from '../output';
import { currentJobToken, jobTokenSource, type JobTokenSource } from '../job-token';
import { DEFAULT_APPROVAL_TIMEOUT_SECONDS } from '../step-up-wait';
import { exchangeWithStepUp, type Exchanged } from '../token-exchange-client';

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

const COMPLETE_ATTEMPTS = 3;
const COMPLETE_TIMEOUT_MS = 10_000;

/**
 * Completes the task, which revokes every credential it holds, with the job's current token (see
 * currentJobToken). A few attempts, each bounded, so a broker outage cannot hang the job.
 */
async function completeTask(
  addr: string,
  tokens: { current: () => Promise<string>; source: JobTokenSource },
  taskId: string,
  result: { status: number; signal: string | null },
): Promise<void> {
  const { status, signal } = result;
  const outcome = signal ? 'cancelled' : status === 0 ? 'succeeded' : 'failed';
  const summary = signal
    ? `tasklease exec: the command ended by ${signal}`
    : `tasklease exec: the command exited ${status}`;
  let lastError: unknown;
  for (let attempt = 0; attempt < COMPLETE_ATTEMPTS; attempt++) {
    try {
      // A retry reads a fresh token: the first failure may have been the token's expiry.
      const bearer = attempt === 0 ? await tokens.current() : await tokens.source.read();
      const response = await fetch(new URL(`/v1/tasks/${taskId}/complete`, addr), {
        method: 'POST',
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
        body: JSON.stringify({ outcome, summary }),
        signal: AbortSignal.timeout(COMPLETE_TIMEOUT_MS),
      });
      // Completed before (a retry) is as good: its leases are revoked.
      if (response.ok || response.status === 409) return;
      const body = (await response.json().catch(() => ({}))) as { error?: string; message?: string };
      lastError = new Error(`${response.status} ${body.error ?? ''} ${body.message ?? ''}`.trim());
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
  }
  throw lastError;
}

/**
 * Signals from the moment exec starts until the task is completed: while exchanging, the first one stops
 * the exchanges (what was issued is revoked, nothing runs); while the command runs, they are forwarded to
 * it; while completing, they are noted and nothing else, so a second Ctrl-C or a CI's SIGINT-then-SIGTERM
 * cannot kill tasklease before the credentials are revoked.
 */
function signalGuard() {
  let child: ChildProcess | null = null;
  let received: NodeJS.Signals | null = null;
  const stop = new AbortController();
  const handler = (signal: NodeJS.Signals) => {
    received ??= signal;
    stop.abort(new Error(`${signal} received; not running the command`));
    // A terminal's Ctrl-C reaches the whole process group, the command included: do not send it twice.
    if (child && child.exitCode === null && !(signal === 'SIGINT' && process.stdin.isTTY)) child.kill(signal);
  };
  for (const signal of FORWARDED_SIGNALS) process.on(signal, handler);
  return {
    received: () => received,
    /** Aborted by the first signal: ends a wait for an approval at once. */
    stopped: stop.signal,
    attach: (running: ChildProcess | null) => {
      child = running;
    },
    release: () => {
      for (const signal of FORWARDED_SIGNALS) process.off(signal, handler);
    },
  };
}

/** Runs the command; resolves with its exit status once it has exited (127/126 when it could not start). */
function run(command: string[], childEnv: NodeJS.ProcessEnv, guard: ReturnType<typeof signalGuard>) {
  return new Promise<{ status: number; signal: string | null }>((resolve) => {
    const [file, ...args] = command as [string, ...string[]];
    const cannotRun = (error: NodeJS.ErrnoException) => {
      process.stderr.write(`tasklease: cannot run ${file}: ${error.message}\n`);
      resolve({ status: error.code === 'EACCES' ? 126 : 127, signal: null });
    };
    let child: ChildProcess;
    try {
      child = spawn(file, args, { stdio: 'inherit', env: childEnv });
    } catch (error) {
      // spawn throws at once for some arguments (a NUL byte, an empty file name, E2BIG).
      cannotRun(error as NodeJS.ErrnoException);
      return;
    }
    guard.attach(child);
    // 'error' after a successful start is a failed kill, not the end of the command: only 'exit' is.
    child.once('error', (error) => {
      if (child.pid === undefined) cannotRun(error);
    });
    child.once('exit', (code, signal) => resolve({ status: exitStatus(code, signal), signal }));
  });
}

/**
 * `tasklease exec --grant G [--grant ...] -- COMMAND`: exchange the job's token for each grant, run the
 * command with the credentials in its environment, and complete its task when it exits, whatever its exit
 * code, so the credentials die with it. Each exec is its own task within the job (the `job` sent is the job's
 * name plus a random suffix), so a job can run several, and a restarted container starts afresh.
 */
export function registerExecCommand(program: Command, env: () => Env) {
  program
    .command('exec')
    .description('run a command with the job’s credentials, revoked when it exits (RFC 8693 token exchange)')
    .option(
      '--grant <name>',
      'a grant to exchange for (repeatable)',
      (value: string, all: string[]) => [...all, value],
      [],
    )
    .option('--token-file <path>', 'read the job token from this file (re-read at completion)')
    .option('--token-env <name>', 'read the job token from this environment variable')
    .option('--audience <aud>', 'the audience to ask GitHub Actions for', 'tasklease')
    .option('--job <name>', 'this job’s name, recorded on the task (default: $GITHUB_JOB)')
    .option('--ttl <seconds>', 'a shorter credential life than the grant’s maximum')
    .option(
      '--approval-timeout <seconds>',
      `how long to wait for a step-up approval (grants with approval: required) before giving up, exit 7 ` +
        `(default ${DEFAULT_APPROVAL_TIMEOUT_SECONDS}, the broker's default approvals.pendingTtlSeconds)`,
      wholeSeconds,
      DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    )
    .argument('<command...>', 'the command and its arguments, after --')
    .action(async (command: string[], options) => {
      const grants = options.grant as string[];
      if (grants.length === 0) throw new Error('give at least one --grant');
      const e = env();
      const source = jobTokenSource(options, e, readVariable);
      const job = `${options.job ?? e.GITHUB_JOB ?? 'exec'}:${randomBytes(4).toString('hex')}`;
      const guard = signalGuard();
      try {
        process.exitCode = await execute(
          e.TASKLEASE_ADDR,
          source,
          grants,
          command,
          { job, ttl: options.ttl, approvalTimeoutSeconds: options.approvalTimeout },
          guard,
        );
      } finally {
        guard.release();
      }
    });
}

interface ExecOptions {
  job: string;
  ttl?: string;
  approvalTimeoutSeconds: number;
}

type Tokens = { current: () => Promise<string>; source: JobTokenSource };

async function execute(
  addr: string,
  source: JobTokenSource,
  grants: string[],
  command: string[],
  options: ExecOptions,
  guard: ReturnType<typeof signalGuard>,
): Promise<number> {
  const tokens: Tokens = { current: currentJobToken(await source.read(), source), source };
  const task: { id?: string } = {};
  const warn = (what: string, error: unknown) =>
    process.stderr.write(
      `tasklease: ${what} task ${task.id} failed (${(error as Error).message}); its credentials stay valid until ` +
        `they expire unless an operator revokes them: tasklease lease revoke --task ${task.id}\n`,
    );
  let childEnv: Record<string, string>;
  try {
    childEnv = await exchangeAll(addr, grants, options, tokens, guard, task);
  } catch (error) {
    // Whatever was issued before the failure dies now: nothing runs with half its credentials. A task that
    // only waited for an approval is completed too, so nothing stays open for it.
    if (task.id) {
      process.stderr.write(`tasklease: not running the command; revoking what task ${task.id} already got\n`);
      await completeTask(addr, tokens, task.id, { status: 1, signal: null }).catch((failure) =>
        warn('completing', failure),
      );
    }
    const signal = guard.received();
    if (signal) {
      process.stderr.write(`tasklease: ${signal} received; the command was not run\n`);
      return exitStatus(null, signal);
    }
    throw error;
  }
  const env = { ...inheritedEnvironment(), ...childEnv, TASKLEASE_TASK: task.id as string };
  const result = await run(command, env, guard);
  await completeTask(addr, tokens, task.id as string, result).catch((failure) => warn('completing', failure));
  return result.status;
}

/**
 * Each grant's credential as the command's environment, in order, waiting for a step-up approval where a
 * grant needs one (a signal ends the wait). `task.id` is set as soon as the broker names the job's task.
 */
async function exchangeAll(
  addr: string,
  grants: string[],
  options: ExecOptions,
  tokens: Tokens,
  guard: ReturnType<typeof signalGuard>,
  task: { id?: string },
): Promise<Record<string, string>> {
  const childEnv: Record<string, string> = {};
  const waiting = {
    addr,
    token: tokens.current,
    timeoutSeconds: options.approvalTimeoutSeconds,
    signal: guard.stopped,
    // Giving up completes this exec's task, and another exec is another task: nothing resumes this wait.
    resumable: false,
    onPending: (pending: { taskId?: string }) => (task.id ??= pending.taskId),
  };
  for (const grant of grants) {
    if (guard.received()) throw new Error(`${guard.received()} received; not running the command`);
    const issued = await exchangeWithStepUp(addr, grant, { job: options.job, ttl: options.ttl }, waiting);
    task.id = issued.task_id;
    const variables = credentialEnvironment(grant, issued);
    const clash = Object.keys(variables).find((name) => name in childEnv);
    if (clash)
      throw new Error(`grants ${grant} and an earlier one both set ${clash}: use one of them per exec`);
    Object.assign(childEnv, variables);
  }
  if (guard.received()) throw new Error(`${guard.received()} received; not running the command`);
  return childEnv;
}
