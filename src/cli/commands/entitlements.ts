import type { Command } from 'commander';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';
import { printJson, printTable } from '../output';
import { expiresIn, queryOf, validityBody, withValidity } from './record-options';

interface EntitlementRow {
  entitlementId: string;
  status: string;
  grant: string;
  owner: string;
  purpose: string;
  enrolment: { enrolmentId: string; issuer: string; subjectPattern: string; status: string };
  expiresAt: string;
  expiresInSeconds: number;
  approval: { approvalId: string; status: string } | null;
}

interface EntitlementList {
  entitlements: EntitlementRow[];
  total: number;
  dueBefore?: string;
}

const COLUMNS = ['entitlementId', 'status', 'grant', 'workload', 'owner', 'expiresAt', 'approvalId'];
const row = (entitlement: EntitlementRow) => ({
  ...entitlement,
  workload: `${entitlement.enrolment.issuer} ${entitlement.enrolment.subjectPattern}`,
  approvalId: entitlement.approval?.approvalId,
  expiresIn: expiresIn(entitlement.expiresInSeconds),
});

function printOne(entitlement: EntitlementRow) {
  printTable([row(entitlement)], COLUMNS);
  if (entitlement.status === 'pending')
    process.stdout.write(
      `waiting for another approver: tasklease approvals approve ${entitlement.approval?.approvalId}\n`,
    );
  if (entitlement.status === 'suspended')
    process.stdout.write(
      `its enrolment ${entitlement.enrolment.enrolmentId} is ${entitlement.enrolment.status}\n`,
    );
}

export function registerEntitlementCommands(program: Command, env: () => Env) {
  const entitlements = program
    .command('entitlements')
    .description('grants approved for enrolled workloads: list, propose, revoke, recertify (admin)');
  const call = () => createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);

  entitlements
    .command('ls')
    .description('list entitlements, soonest expiry first')
    .option('--grant <name>')
    .option('--owner <owner>')
    .option('--enrolment <id>')
    .option(
      '--status <status>',
      'pending | active | suspended | denied | lapsed | expired | revoked | all',
      'all',
    )
    .option('--json', 'print JSON')
    .action(async (options: Record<string, string | boolean | undefined>) => {
      const query = queryOf(options, ['grant', 'owner', 'enrolment', 'status']);
      const result = await call()<EntitlementList>('GET', `/v1/entitlements?${query}`);
      if (options.json) return printJson(result);
      printTable(result.entitlements.map(row), COLUMNS);
      process.stdout.write(`${result.total} entitlement${result.total === 1 ? '' : 's'}\n`);
    });

  entitlements
    .command('due')
    .description('active entitlements expiring soon, soonest first, by owner: what to recertify')
    .option('--owner <owner>', 'only this owner’s')
    .option('--within-days <n>', 'expiring within this many days (default: entitlements.dueWithinDays)')
    .option('--json', 'print JSON')
    .action(async (options: { owner?: string; withinDays?: string; json?: boolean }) => {
      const query = queryOf({ owner: options.owner }, ['owner']);
      if (options.withinDays) query.set('dueWithinDays', options.withinDays);
      else query.set('due', 'true');
      const result = await call()<EntitlementList>('GET', `/v1/entitlements?${query}`);
      if (options.json) return printJson(result);
      printTable(result.entitlements.map(row), [
        'owner',
        'expiresIn',
        'grant',
        'workload',
        'entitlementId',
        'expiresAt',
      ]);
      const count = `${result.total} entitlement${result.total === 1 ? '' : 's'}`;
      process.stdout.write(
        `${count} to recertify before ${result.dueBefore}: tasklease entitlements recertify <id> --reason ...\n`,
      );
    });

  entitlements
    .command('show')
    .description('one entitlement, with its approval and its enrolment’s status')
    .argument('<entitlementId>')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      const result = await call()<EntitlementRow>('GET', `/v1/entitlements/${encodeURIComponent(id)}`);
      if (options.json) return printJson(result);
      printOne(result);
    });

  withValidity(
    entitlements
      .command('request')
      .description('propose entitling an enrolment to a grant; another approver approves it')
      .requiredOption('--enrolment <id>', 'the enrolment (tasklease enrolments ls)')
      .requiredOption('--grant <name>')
      .requiredOption('--owner <owner>', 'the team answerable for it, who recertifies it')
      .requiredOption('--purpose <text>', 'why the workload needs the grant'),
  )
    .option('--json', 'print JSON')
    .action(async (options: Record<string, string | undefined>) => {
      const body = {
        enrolmentId: options.enrolment,
        grant: options.grant,
        owner: options.owner,
        purpose: options.purpose,
        ...validityBody(options),
      };
      const result = await call()<EntitlementRow>('POST', '/v1/entitlements', body);
      if (options.json) return printJson(result);
      printOne(result);
    });

  entitlements
    .command('revoke')
    .description('revoke an entitlement now: the grant stops issuing to the workload at once')
    .argument('<entitlementId>')
    .requiredOption('--reason <text>', 'recorded in the audit')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { reason: string; json?: boolean }) => {
      const path = `/v1/entitlements/${encodeURIComponent(id)}/revoke`;
      const result = await call()<EntitlementRow>('POST', path, { reason: options.reason });
      if (options.json) return printJson(result);
      printOne(result);
    });

  withValidity(
    entitlements
      .command('recertify')
      .description('confirm an active entitlement is still needed and set its new expiry (not its proposer)')
      .argument('<entitlementId>')
      .requiredOption('--reason <text>', 'recorded in the audit'),
  )
    .option('--json', 'print JSON')
    .action(async (id: string, options: Record<string, string | undefined>) => {
      const path = `/v1/entitlements/${encodeURIComponent(id)}/recertify`;
      const result = await call()<EntitlementRow>('POST', path, {
        reason: options.reason,
        ...validityBody(options),
      });
      if (options.json) return printJson(result);
      printOne(result);
    });
}
