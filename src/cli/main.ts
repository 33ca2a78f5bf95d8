import { Command, CommanderError } from 'commander';
import path from 'node:path';
import { readEnv, type Env } from '../config/env';
import { generateSigningJwks } from '../signing/signing-keys';
import { mintDevToken } from '../wiring/dev-files';
import { ApiError } from './api-client';
import { EXIT, ExitError } from './exit-codes';
import { collectPairs, printJson } from './output';
import { registerAdminCommands } from './commands/admin';
import { registerApprovalCommands } from './commands/approvals';
import { registerAuditCommands } from './commands/audit';
import { registerCredentialProcessCommand } from './commands/credential-process';
import { registerEnrolmentCommands } from './commands/enrolments';
import { registerEntitlementCommands } from './commands/entitlements';
import { registerExecCommand } from './commands/exec';
import { registerLeaseCommands } from './commands/lease';
import { registerPolicyCommands } from './commands/policy';
import { registerProcessCommands } from './commands/processes';
import { registerTaskCommands } from './commands/task';

/** Exit codes: see exit-codes.ts. */
export function buildProgram(): Command {
  let env: Env | undefined;
  const getEnv = () => (env ??= readEnv());
  const program = new Command('tasklease')
    .description('just-in-time, per-task credentials for agents and pipelines')
    .version(require('../../package.json').version as string)
    .showHelpAfterError()
    .exitOverride();

  registerProcessCommands(program, getEnv);
  registerLeaseCommands(program, getEnv);
  registerApprovalCommands(program, getEnv);
  registerAuditCommands(program, getEnv);
  registerTaskCommands(program, getEnv);
  registerEnrolmentCommands(program, getEnv);
  registerEntitlementCommands(program, getEnv);
  registerPolicyCommands(program, getEnv);
  registerCredentialProcessCommand(program, getEnv);
  registerExecCommand(program, getEnv);
  registerAdminCommands(program);

  program
    .command('dev-token')
    .description('print an identity token from the dev issuer (tasklease dev must have run once)')
    .requiredOption('--sub <subject>', 'the workload subject')
    .option('--claim <key=value>', 'an extra claim (repeatable)', collectPairs, {})
    .option('--ttl <seconds>', 'token lifetime', '3600')
    .option('--aud <audience>', 'audience', 'tasklease')
    .action(async (options) => {
      const token = await mintDevToken(path.resolve(getEnv().TASKLEASE_DEV_DIR), {
        subject: options.sub,
        ttlSeconds: Number(options.ttl),
        claims: options.claim,
        audience: options.aud,
      });
      process.stdout.write(`${token}\n`);
    });

  program
    .command('keys')
    .description('signing keys')
    .command('generate')
    .description(
      'print a new ES256 private JWKS for TASKLEASE_SIGNING_KEYS (to rotate, put it first and keep the old key after it)',
    )
    .action(async () => printJson(await generateSigningJwks()));

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode === 0 ? EXIT.ok : EXIT.usage;
      return;
    }
    if (error instanceof ExitError) {
      process.stderr.write(`tasklease: ${error.message}\n`);
      process.exitCode = error.exitCode;
      return;
    }
    if (error instanceof ApiError) {
      process.stderr.write(`tasklease: ${error.code}: ${error.message}\n`);
      process.exitCode = error.status === 0 ? EXIT.error : EXIT.apiRefused;
      return;
    }
    process.stderr.write(`tasklease: ${(error as Error).message}\n`);
    process.exitCode = EXIT.error;
  }
}
