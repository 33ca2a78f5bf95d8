import { Option, type Command } from 'commander';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';
import { printJson, printTable } from '../output';
import { registerRevokeCommand } from './lease-revoke';

interface LeaseRow {
  leaseId: string;
  taskId: string;
  grant: string;
  provider: string;
  identity: { issuer: string; subject: string };
  state: string;
  expiresAt: string;
  revocation?: string;
}

interface LeaseList {
  leases: LeaseRow[];
  total: number;
  countsByState: Record<string, number>;
}

/** "3 leases: 2 active, 1 irrevocable" (and how many the table shows, when `limit` cut it short). */
export function countSummary(list: LeaseList): string {
  const byState = Object.entries(list.countsByState).map(([state, count]) => `${count} ${state}`);
  const shown = list.leases.length < list.total ? ` (${list.leases.length} shown)` : '';
  return `${list.total} lease${list.total === 1 ? '' : 's'}${byState.length ? `: ${byState.join(', ')}` : ''}${shown}`;
}

export function registerLeaseCommands(program: Command, env: () => Env) {
  const lease = program
    .command('lease')
    .description('list, revoke and retry leases (admin; talks to TASKLEASE_ADDR)');

  lease
    .command('ls')
    .description('list leases; without a filter, every unsettled lease')
    .option('--task <id>')
    .option('--identity <subject>')
    .option('--issuer <name>', 'with --identity: only this issuer')
    .option('--grant <name>')
    .option('--provider <kind>')
    .option('--state <state>', 'active | revoking | revoked | expired | irrevocable | force-closed')
    .addOption(
      new Option('--irrevocable', 'only leases whose revocation failed (--state irrevocable)').conflicts(
        'state',
      ),
    )
    .option('--json', 'print JSON')
    .action(async (options: Record<string, string | boolean | undefined>) => {
      const query = new URLSearchParams();
      for (const key of ['task', 'identity', 'issuer', 'grant', 'provider', 'state']) {
        if (typeof options[key] === 'string') query.set(key, options[key] as string);
      }
      if (options.irrevocable) query.set('state', 'irrevocable');
      const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
      const result = await call<LeaseList>('GET', `/v1/leases?${query}`);
      if (options.json) return printJson(result);
      printTable(
        result.leases.map((row) => ({ ...row, identity: `${row.identity.issuer}/${row.identity.subject}` })),
        ['leaseId', 'state', 'grant', 'provider', 'identity', 'taskId', 'expiresAt', 'revocation'],
      );
      process.stdout.write(`${countSummary(result)}\n`);
    });

  registerRetryCommand(lease, env);
  registerRevokeCommand(lease, env);
}

/** `lease retry <id>` or `lease retry --all-irrevocable`: revoke an irrevocable lease again, now. */
function registerRetryCommand(lease: Command, env: () => Env) {
  lease
    .command('retry')
    .description('retry the revocation of an irrevocable lease now, or of every irrevocable lease')
    .argument('[leaseId]')
    .option('--all-irrevocable', 'every irrevocable lease')
    .option('--reason <text>', 'recorded in the audit (the lease keeps the reason it was revoked for)')
    .option('--json', 'print JSON')
    .action(async function (this: Command, leaseId: string | undefined, options: RetryOptions) {
      if (Boolean(leaseId) === Boolean(options.allIrrevocable))
        this.error('give a lease id or --all-irrevocable (one of them)', { exitCode: 2 });
      const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
      const body = options.reason ? { reason: options.reason } : {};
      if (leaseId) {
        const result = await call('POST', `/v1/leases/${encodeURIComponent(leaseId)}/retry`, body);
        if (options.json) return printJson(result);
        process.stdout.write(`lease ${leaseId}: retrying (irrevocable until the worker settles it)\n`);
        return;
      }
      const result = await call<{ matched: number; retried: number }>('POST', '/v1/leases/retry', body);
      if (options.json) return printJson(result);
      process.stdout.write(
        `retrying ${result.retried} irrevocable lease${result.retried === 1 ? '' : 's'}\n`,
      );
    });
}

interface RetryOptions {
  allIrrevocable?: boolean;
  reason?: string;
  json?: boolean;
}
