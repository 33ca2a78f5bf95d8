import type { Command } from 'commander';
import type { Env } from '../../config/env';
import { createApiClient, type ApiCall } from '../api-client';
import { EXIT } from '../exit-codes';
import { printJson, printTable, wholeSeconds } from '../output';
import { createProgressLine } from '../progress-line';
import {
  describeOutcome,
  describeProgress,
  describeStates,
  waitForRevocation,
  type WaitOutcome,
} from '../wait-for-revocation';

/** How long `--wait` waits unless told otherwise. */
const DEFAULT_WAIT_SECONDS = 300;

/** `lease revoke <id>` or `lease revoke --task|--identity|--grant|--provider|--all`, optionally `--wait`. */
export function registerRevokeCommand(lease: Command, env: () => Env) {
  lease
    .command('revoke')
    .description('revoke one lease by id, or every lease matching a selector')
    .argument('[leaseId]')
    .requiredOption('--reason <text>', 'recorded in the lease and the audit')
    .option('--task <id>')
    .option('--identity <subject>')
    .option('--issuer <name>')
    .option('--grant <name>')
    .option('--provider <kind>')
    .option('--all', 'every unsettled lease')
    .option('--dry-run', 'show what would be revoked (counts per grant and per provider), change nothing')
    .option(
      '--force',
      'if the backend cannot revoke, close the lease anyway as force-closed (the credential may still work)',
    )
    .option(
      '--wait',
      `wait until every lease is settled or irrevocable, with progress on stderr; exit ${EXIT.irrevocable} if some are irrevocable`,
    )
    .option(
      '--timeout <seconds>',
      `with --wait: give up after this long (default ${DEFAULT_WAIT_SECONDS}), exit ${EXIT.timedOut}`,
      wholeSeconds,
    )
    .option('--json', 'print JSON')
    .action(async (leaseId: string | undefined, options: RevokeOptions, command: Command) => {
      if (options.timeout !== undefined && !options.wait) command.error('--timeout goes with --wait');
      if (options.wait && options.dryRun) command.error('--wait has nothing to wait for with --dry-run');
      const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
      const answer = leaseId ? await revokeOne(call, leaseId, options) : await revokeMany(call, options);
      if (!options.wait) return;
      if (!answer.revocationId)
        throw new Error('this broker cannot be followed: it returned no revocationId');
      const timeoutSeconds = options.timeout ?? DEFAULT_WAIT_SECONDS;
      const progress = createProgressLine(process.stderr);
      const outcome = await waitForRevocation(call, answer.revocationId, {
        timeoutMs: timeoutSeconds * 1000,
        progress,
      });
      progress.done(describeProgress(outcome.progress));
      reportOutcome(outcome, timeoutSeconds, options.json ? answer : null);
    });
}

interface RevokeOptions {
  reason: string;
  task?: string;
  identity?: string;
  issuer?: string;
  grant?: string;
  provider?: string;
  all?: boolean;
  dryRun?: boolean;
  force?: boolean;
  wait?: boolean;
  timeout?: number;
  json?: boolean;
}

interface BulkAnswer {
  matched: number;
  revoked: number;
  byGrant: Record<string, number>;
  byProvider: Record<string, number>;
  revocationId?: string;
}

async function revokeOne(call: ApiCall, leaseId: string, options: RevokeOptions) {
  const answer = await call<{ leaseId: string; state: string; revocationId?: string }>(
    'POST',
    `/v1/leases/${encodeURIComponent(leaseId)}/revoke`,
    { reason: options.reason, force: Boolean(options.force) },
  );
  // With --wait --json, one JSON document is printed at the end.
  if (options.json && !options.wait) printJson(answer);
  if (!options.json) process.stdout.write(`lease ${leaseId}: revoking\n`);
  return answer;
}

async function revokeMany(call: ApiCall, options: RevokeOptions) {
  const selector: Record<string, unknown> = {};
  for (const key of ['task', 'identity', 'issuer', 'grant', 'provider'] as const)
    if (options[key] !== undefined) selector[key] = options[key];
  if (options.all) selector.all = true;
  const answer = await call<BulkAnswer>('POST', '/v1/leases/revoke', {
    selector,
    reason: options.reason,
    dryRun: Boolean(options.dryRun),
    force: Boolean(options.force),
  });
  if (options.json) {
    if (!options.wait) printJson(answer);
    return answer;
  }
  const counted = options.dryRun ? answer.matched : answer.revoked;
  process.stdout.write(
    `${options.dryRun ? 'would revoke' : 'revoking'} ${counted} of ${answer.matched} matched\n`,
  );
  printTable(
    Object.entries(answer.byGrant).map(([grant, count]) => ({ grant, count })),
    ['grant', 'count'],
  );
  process.stdout.write('\n');
  printTable(
    Object.entries(answer.byProvider).map(([provider, count]) => ({ provider, count })),
    ['provider', 'count'],
  );
  return answer;
}

/** What the wait came to, on stdout (JSON with `--json`), and the exit code that says it. */
function reportOutcome(outcome: WaitOutcome, timeoutSeconds: number, json: object | null): void {
  const { progress, timedOut } = outcome;
  if (json) printJson({ ...json, progress });
  else {
    process.stdout.write(`${describeOutcome(progress)}\n`);
    if (progress.irrevocableLeaseIds.length > 0)
      printTable(
        progress.irrevocableLeaseIds.map((irrevocable) => ({ irrevocable })),
        ['irrevocable'],
      );
    const unlisted = progress.irrevocable - progress.irrevocableLeaseIds.length;
    if (unlisted > 0)
      process.stdout.write(`... and ${unlisted} more (tasklease lease ls --state irrevocable)\n`);
  }
  const forceClosed = progress.byState['force-closed'] ?? 0;
  if (forceClosed > 0)
    process.stderr.write(
      `tasklease: ${forceClosed} force-closed: the backend could not revoke them and the credentials may still ` +
        'work at their source until they expire (see revocationDetail in tasklease lease ls --state force-closed)\n',
    );
  if (timedOut) {
    process.stderr.write(
      `tasklease: timed out after ${timeoutSeconds} s: ${progress.pending} of ${progress.total} still pending ` +
        `(${describeStates(pendingStates(progress.byState))}${progress.retrying > 0 ? `; ${progress.retrying} retrying` : ''})\n`,
    );
    process.exitCode = EXIT.timedOut;
  } else if (progress.irrevocable > 0) {
    process.stderr.write(
      `tasklease: ${progress.irrevocable} irrevocable: the backend would not revoke them; the sweeper keeps ` +
        'retrying (tasklease lease ls --state irrevocable), or revoke again, with --force to close them anyway\n',
    );
    process.exitCode = EXIT.irrevocable;
  }
}

const pendingStates = (byState: Record<string, number>) =>
  Object.fromEntries(Object.entries(byState).filter(([state]) => state === 'active' || state === 'revoking'));
