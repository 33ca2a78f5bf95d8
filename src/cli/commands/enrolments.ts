import type { Command } from 'commander';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';
import { printJson, printTable } from '../output';
import { queryOf, validityBody, withValidity } from './record-options';

interface EnrolmentRow {
  enrolmentId: string;
  status: string;
  issuer: string;
  subjectPattern: string;
  owner: string;
  purpose: string;
  expiresAt: string;
  approval: { approvalId: string; status: string } | null;
}

const COLUMNS = ['enrolmentId', 'status', 'issuer', 'subjectPattern', 'owner', 'expiresAt', 'approvalId'];
const row = (enrolment: EnrolmentRow) => ({ ...enrolment, approvalId: enrolment.approval?.approvalId });

function printOne(enrolment: EnrolmentRow) {
  printTable([row(enrolment)], COLUMNS);
  if (enrolment.status === 'pending')
    process.stdout.write(
      `waiting for another approver: tasklease approvals approve ${enrolment.approval?.approvalId}\n`,
    );
}

export function registerEnrolmentCommands(program: Command, env: () => Env) {
  const enrolments = program
    .command('enrolments')
    .description('workloads approved once (issuer + subject pattern), apart from each grant (admin)');
  const call = () => createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);

  enrolments
    .command('ls')
    .description('list enrolments, soonest expiry first')
    .option('--issuer <name>')
    .option('--owner <owner>')
    .option('--status <status>', 'pending | active | denied | lapsed | expired | revoked | all', 'all')
    .option('--json', 'print JSON')
    .action(async (options: Record<string, string | boolean | undefined>) => {
      const query = queryOf(options, ['issuer', 'owner', 'status']);
      const result = await call()<{ enrolments: EnrolmentRow[]; total: number }>(
        'GET',
        `/v1/enrolments?${query}`,
      );
      if (options.json) return printJson(result);
      printTable(result.enrolments.map(row), COLUMNS);
      process.stdout.write(`${result.total} enrolment${result.total === 1 ? '' : 's'}\n`);
    });

  enrolments
    .command('show')
    .description('one enrolment, with its approval')
    .argument('<enrolmentId>')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      const result = await call()<EnrolmentRow>('GET', `/v1/enrolments/${encodeURIComponent(id)}`);
      if (options.json) return printJson(result);
      printOne(result);
    });

  withValidity(
    enrolments
      .command('request')
      .description('propose enrolling a workload; another approver approves it (tasklease approvals)')
      .requiredOption('--issuer <name>', 'the issuer name in the config')
      .requiredOption(
        '--subject-pattern <pattern>',
        "the subjects enrolled; '*' matches any run of characters",
      )
      .requiredOption('--owner <owner>', 'the team answerable for it')
      .requiredOption('--purpose <text>', 'why it is enrolled'),
  )
    .option('--json', 'print JSON')
    .action(async (options: Record<string, string | undefined>) => {
      const body = {
        issuer: options.issuer,
        subjectPattern: options.subjectPattern,
        owner: options.owner,
        purpose: options.purpose,
        ...validityBody(options),
      };
      const result = await call()<EnrolmentRow>('POST', '/v1/enrolments', body);
      if (options.json) return printJson(result);
      printOne(result);
    });

  enrolments
    .command('revoke')
    .description('revoke an enrolment now: every entitlement under it stops issuing at once')
    .argument('<enrolmentId>')
    .requiredOption('--reason <text>', 'recorded in the audit')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { reason: string; json?: boolean }) => {
      const path = `/v1/enrolments/${encodeURIComponent(id)}/revoke`;
      const result = await call()<EnrolmentRow>('POST', path, { reason: options.reason });
      if (options.json) return printJson(result);
      printOne(result);
    });
}
