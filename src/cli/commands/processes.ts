import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load-config';
import type { Env } from '../../config/env';
import { EXIT } from '../exit-codes';
import { resolveVaultSettings } from '../../config/vault-settings';
import { createLogger, type Logger } from '../../observability/logger';
import { loadSigningKeys } from '../../signing/signing-keys';

const required = <T>(value: T | undefined, name: string): T => {
  if (!value) throw new Error(`${name} is required (see .env.example)`);
  return value;
};

/** A process that cannot start within this long exits (a supervisor restarts it; nothing hangs half-started). */
const START_DEADLINE_MS = 15_000;

/**
 * Starts a long-running process or exits non-zero, saying why (the address or file is in the message).
 * Start-up closes what it had opened when a step fails; the exit is still forced, because a handle left
 * behind (a reconnecting socket, a timer) would otherwise keep a process alive that does nothing.
 */
async function startOrExit<T>(
  logger: Logger,
  what: string,
  start: () => Promise<T>,
  deadlineMs: number | null = START_DEADLINE_MS,
): Promise<T> {
  const fail = (message: string): never => {
    logger.fatal({ err: message }, `${what} could not start`);
    process.stderr.write(`tasklease ${what}: could not start: ${message}\n`);
    process.exit(EXIT.error);
  };
  const watchdog =
    deadlineMs === null
      ? undefined
      : setTimeout(() => fail(`start-up did not complete within ${deadlineMs / 1000} s`), deadlineMs);
  try {
    return await start();
  } catch (error) {
    return fail((error as Error).message);
  } finally {
    clearTimeout(watchdog);
  }
}

/** SIGTERM/SIGINT close cleanly (in-flight requests and jobs finish); SIGHUP reloads policies where given. */
function onSignals(logger: Logger, close: () => Promise<void>, reload?: () => void) {
  let closing = false;
  const stop = (signal: string) => {
    if (closing) return;
    closing = true;
    logger.info({ signal }, 'shutting down');
    close().then(
      () => process.exit(0),
      (error: Error) => {
        logger.error({ err: error.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  if (reload) process.on('SIGHUP', reload);
}

export function registerProcessCommands(program: Command, env: () => Env) {
  program
    .command('serve')
    .description('run the HTTP API (needs TASKLEASE_CONFIG, REDIS_URL, TASKLEASE_SIGNING_KEYS)')
    .action(async () => {
      const e = env();
      const logger = createLogger(e.LOG_LEVEL);
      const config = loadConfigFile(required(e.TASKLEASE_CONFIG, 'TASKLEASE_CONFIG'));
      const signingKeys = await loadSigningKeys(required(e.TASKLEASE_SIGNING_KEYS, 'TASKLEASE_SIGNING_KEYS'));
      // Loaded on demand: the admin and dev-token commands start fast without express, BullMQ and friends.
      const { startApi } = await import('../../wiring/serve');
      const api = await startOrExit(logger, 'serve', () =>
        startApi({
          config,
          redis: required(e.redis, 'REDIS_URL'),
          signingKeys,
          logger,
          host: e.HOST,
          port: e.PORT,
          vault: resolveVaultSettings(config, e),
        }),
      );
      onSignals(logger, api.close, api.reloadPolicies);
    });

  program
    .command('worker')
    .description(
      'run revocation jobs and the sweeper (needs TASKLEASE_CONFIG, REDIS_URL; health on WORKER_PORT)',
    )
    .action(async () => {
      const e = env();
      const logger = createLogger(e.LOG_LEVEL);
      const config = loadConfigFile(required(e.TASKLEASE_CONFIG, 'TASKLEASE_CONFIG'));
      const { startWorker } = await import('../../wiring/worker');
      const worker = await startOrExit(logger, 'worker', () =>
        startWorker({
          config,
          redis: required(e.redis, 'REDIS_URL'),
          logger,
          host: e.HOST,
          port: e.WORKER_PORT,
          vault: resolveVaultSettings(config, e),
        }),
      );
      // SIGHUP is answered, not fatal: the worker holds no policies, so there is nothing to reload.
      onSignals(logger, worker.close, () => logger.info('SIGHUP: the worker has no policies to reload'));
    });

  program
    .command('dev')
    .description(
      'API + worker in one process, a local redis-server and a dev issuer (first run, not production)',
    )
    .action(async () => {
      const e = env();
      const logger = createLogger(e.LOG_LEVEL);
      const { startDev } = await import('../../wiring/dev');
      // No deadline: a first run may start a local redis-server first; each step is bounded on its own.
      const dev = await startOrExit(logger, 'dev', () => startDev(e, logger), null);
      onSignals(logger, dev.close, dev.api.reloadPolicies);
      process.stdout.write(
        `\ntasklease dev is running at ${dev.api.url}\n` +
          `  config and policies: ${dev.devDir}/tasklease.yaml, ${dev.devDir}/policies/\n` +
          `  an identity token:   npx tasklease dev-token --sub my-agent\n` +
          `  an admin token:      npx tasklease dev-token --sub oncall@example.com\n\n`,
      );
    });

  program
    .command('config')
    .description('configuration tools')
    .command('check')
    .argument('[file]', 'config file (default: TASKLEASE_CONFIG)')
    .description('validate a config file and its policies; prints the first problem by field')
    .action(async (file?: string) => {
      const { createPolicyEngine, workloadIdWarnings } = await import('../../policy/cedar-engine');
      const config = loadConfigFile(file ?? required(env().TASKLEASE_CONFIG, 'TASKLEASE_CONFIG'));
      const engine = createPolicyEngine(config.policies);
      const issuers = config.issuers.map((issuer) => issuer.name);
      for (const warning of workloadIdWarnings(engine.workloadIds, issuers))
        process.stderr.write(`warning: ${warning}\n`);
      process.stdout.write(
        `ok: ${config.issuers.length} issuer(s), ${Object.keys(config.grants).length} grant(s), ${engine.policyCount} polic(ies)\n`,
      );
    });
}
