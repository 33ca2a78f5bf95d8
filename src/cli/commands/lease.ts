import type { Command } from 'commander';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';
import { printJson, printTable } from '../output';

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

export function registerLeaseCommands(program: Command, env: () => Env) {
  const lease = program
    .command('lease')
    .description('list and revoke leases (admin; talks to TASKLEASE_ADDR)');

  lease
    .command('ls')
    .description('list leases; without a filter, every unsettled lease')
    .option('--task <id>')
    .option('--identity <subject>')
    .option('--issuer <name>', 'with --identity: only this issuer')
    .option('--grant <name>')
    .option('--provider <kind>')
    .option('--state <state>', 'active | revoking | revoked | expired | irrevocable | force-closed')
    .option('--json', 'print JSON')
    .action(async (options: Record<string, string | boolean | undefined>) => {
      const query = new URLSearchParams();
      for (const key of ['task', 'identity', 'issuer', 'grant', 'provider', 'state']) {
        if (typeof options[key] === 'string') query.set(key, options[key] as string);
      }
      const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
      const result = await call<{ leases: LeaseRow[]; total: number }>('GET', `/v1/leases?${query}`);
      if (options.json) return printJson(result);
      printTable(
        result.leases.map((row) => ({ ...row, identity: `${row.identity.issuer}/${row.identity.subject}` })),
        ['leaseId', 'state', 'grant', 'provider', 'identity', 'taskId', 'expiresAt', 'revocation'],
      );
    });

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
    .option('--dry-run', 'show what would be revoked, change nothing')
    .option(
      '--force',
      'if the backend cannot revoke, close the lease anyway as force-closed (the credential may still work)',
    )
    .option('--json', 'print JSON')
    .action(async (leaseId: string | undefined, options: Record<string, string | boolean | undefined>) => {
      const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
      if (leaseId) {
        const result = await call('POST', `/v1/leases/${encodeURIComponent(leaseId)}/revoke`, {
          reason: options.reason,
          force: Boolean(options.force),
        });
        if (options.json) return printJson(result);
        process.stdout.write(`lease ${leaseId}: revoking\n`);
        return;
      }
      const selector: Record<string, unknown> = {};
      for (const key of ['task', 'identity', 'issuer', 'grant', 'provider'])
        if (typeof options[key] === 'string') selector[key] = options[key];
      if (options.all) selector.all = true;
      const result = await call<{
        matched: number;
        revoked: number;
        byGrant: Record<string, number>;
        byProvider: Record<string, number>;
      }>('POST', '/v1/leases/revoke', {
        selector,
        reason: options.reason,
        dryRun: Boolean(options.dryRun),
        force: Boolean(options.force),
      });
      if (options.json) return printJson(result);
      process.stdout.write(
        `${options.dryRun ? 'would revoke' : 'revoking'} ${options.dryRun ? result.matched : result.revoked} of ${result.matched} matched\n`,
      );
      printTable(
        Object.entries(result.byGrant).map(([grant, count]) => ({ grant, count })),
        ['grant', 'count'],
      );
    });
}
