import { Option, type Command } from 'commander';
import type { Env } from '../../config/env';
import { createApiClient, type ApiCall } from '../api-client';
import { EXIT, ExitError } from '../exit-codes';
import { printJson, printTable, wholeSeconds } from '../output';
import { DEFAULT_APPROVAL_TIMEOUT_SECONDS, describeDecision } from '../step-up-wait';
import { describeDuration, waitForApproval, type ApprovalView } from '../wait-for-approval';

const STATUSES = ['pending', 'approved', 'denied', 'expired', 'used'];
const KINDS = ['step-up', 'enrolment', 'entitlement'];

/** At most this many characters of a task's purpose in the table (`approvals show` prints it whole). */
const PURPOSE_WIDTH = 48;

const clip = (text: string, width: number) => (text.length > width ? `${text.slice(0, width - 1)}…` : text);

/** What the request is about: the task's ticket and purpose for a step-up, else the request's own summary. */
function about(approval: ApprovalView): string {
  const task = approval.task;
  if (!task?.purpose) return clip(approval.summary, PURPOSE_WIDTH);
  return clip(task.ticket ? `${task.ticket}: ${task.purpose}` : task.purpose, PURPOSE_WIDTH);
}

/** One table row: ages and deadlines relative to now, as an approver scanning the inbox reads them. */
export function approvalRow(approval: ApprovalView, nowMs: number): Record<string, string | undefined> {
  const open = approval.status === 'pending' || approval.status === 'approved';
  return {
    id: approval.approvalId,
    kind: approval.kind,
    status: approval.status,
    age: describeDuration(nowMs - Date.parse(approval.createdAt)),
    requester: `${approval.requester.issuer}/${approval.requester.subject}`,
    grant: approval.grant,
    ttl: approval.ttlSeconds === undefined ? undefined : `${approval.ttlSeconds}s`,
    about: about(approval),
    'expires in': open ? describeDuration(Date.parse(approval.expiresAt) - nowMs) : undefined,
  };
}

/** `approvals show`: every fact an approver decides on, one per line. */
export function describeApproval(approval: ApprovalView, nowMs: number): string[] {
  const { task } = approval;
  const field = (label: string, value: unknown) =>
    value === undefined || value === null || value === '' ? [] : [`${label.padEnd(10)} ${String(value)}`];
  const job = task?.job ? Object.entries(task.job).map(([key, value]) => `${key}=${value}`) : [];
  const expires = Date.parse(approval.expiresAt) - nowMs;
  return [
    ...field('approval', approval.approvalId),
    ...field('kind', approval.kind),
    ...field(
      'status',
      approval.status === 'pending' || approval.status === 'approved'
        ? `${approval.status} (expires in ${describeDuration(expires)}, at ${approval.expiresAt})`
        : approval.status,
    ),
    ...field('summary', approval.summary),
    ...field('requester', `${approval.requester.issuer}/${approval.requester.subject}`),
    ...field('reason', approval.reason),
    ...field('grant', approval.grant),
    ...field('ttl', approval.ttlSeconds === undefined ? undefined : `${approval.ttlSeconds}s`),
    ...field('target', approval.target),
    ...field('task', task ? `${task.taskId}${task.state ? ` (${task.state})` : ''}` : undefined),
    ...field('purpose', task?.purpose),
    ...field('ticket', task?.ticket),
    ...field('ref', task?.ref),
    ...job.map((claim, i) => `${(i === 0 ? 'job' : '').padEnd(10)} ${claim}`),
    ...field(
      'created',
      `${approval.createdAt} (${describeDuration(nowMs - Date.parse(approval.createdAt))} ago)`,
    ),
    ...field('decision', approval.decision ? describeDecision(approval) : undefined),
    ...field('decided', approval.decision?.at),
    ...field('used', approval.usedAt ? `${approval.usedAt}, lease ${approval.leaseId}` : undefined),
  ];
}

const approvalPath = (id: string, action = '') =>
  `/v1/approvals/${encodeURIComponent(id)}${action ? `/${action}` : ''}`;

/** `approvals ls | show | approve | deny | wait`: the approver's inbox, and a script's wait for a decision. */
export function registerApprovalCommands(program: Command, env: () => Env) {
  const approvals = program
    .command('approvals')
    .description(
      'list, show, approve and deny step-up approval requests, or wait for one (talks to TASKLEASE_ADDR)',
    );
  const client = () => createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);

  approvals
    .command('ls')
    .description('list approval requests, newest first; without a filter, the pending ones (admin: view)')
    .addOption(new Option('--status <status>', 'only requests in this status').choices(STATUSES))
    .addOption(new Option('--all', 'every status').conflicts('status'))
    .addOption(new Option('--kind <kind>', 'only requests of this kind').choices(KINDS))
    .option('--json', 'print JSON')
    .action(async (options: { status?: string; all?: boolean; kind?: string; json?: boolean }) => {
      const query = new URLSearchParams({ status: options.all ? 'all' : (options.status ?? 'pending') });
      if (options.kind) query.set('kind', options.kind);
      const result = await client()<{ approvals: ApprovalView[]; total: number }>(
        'GET',
        `/v1/approvals?${query}`,
      );
      if (options.json) return printJson(result);
      const nowMs = Date.now();
      const columns = ['id', 'kind', 'status', 'age', 'requester', 'grant', 'ttl', 'about', 'expires in'];
      printTable(
        result.approvals.map((approval) => approvalRow(approval, nowMs)),
        // The status column says nothing when every row is pending.
        query.get('status') === 'pending' ? columns.filter((column) => column !== 'status') : columns,
      );
      const shown = result.approvals.length < result.total ? ` (${result.approvals.length} shown)` : '';
      process.stdout.write(
        `${result.total} ${query.get('status') === 'all' ? '' : `${query.get('status')} `}request${result.total === 1 ? '' : 's'}${shown}\n`,
      );
    });

  approvals
    .command('show')
    .description(
      'everything an approver decides on: task purpose, ticket, ref, CI job, requester, reason, TTL (admin: view)',
    )
    .argument('<approvalId>')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      const approval = await client()<ApprovalView>('GET', approvalPath(id));
      if (options.json) return printJson(approval);
      process.stdout.write(`${describeApproval(approval, Date.now()).join('\n')}\n`);
      if (approval.status === 'pending')
        process.stdout.write(
          `\ndecide: tasklease approvals approve ${id} --reason "..."  |  tasklease approvals deny ${id} --reason "..."\n`,
        );
    });

  for (const [action, past] of [
    ['approve', 'approved'],
    ['deny', 'denied'],
  ] as const) {
    approvals
      .command(action)
      .description(
        `${action} a pending request, with a reason for the audit (admin: approve; never your own request)`,
      )
      .argument('<approvalId>')
      .requiredOption('--reason <text>', 'why: recorded with the decision and in the audit')
      .option('--json', 'print JSON')
      .action(async (id: string, options: { reason: string; json?: boolean }) => {
        const decided = await client()<ApprovalView>('POST', approvalPath(id, action), {
          reason: options.reason,
        });
        if (options.json) return printJson(decided);
        process.stdout.write(`approval ${id}: ${past} (${decided.summary})\n`);
      });
  }

  registerWaitCommand(approvals, client);
}

/** `approvals wait ID`: for scripts, exit 0 once approved, 8 if denied or expired, 7 at the timeout. */
function registerWaitCommand(approvals: Command, client: () => ApiCall) {
  approvals
    .command('wait')
    .description(
      `wait until a request is decided: exit 0 approved, ${EXIT.approvalRefused} denied or expired, ${EXIT.timedOut} timed out ` +
        '(admin: view, or the requesting workload’s own token)',
    )
    .argument('<approvalId>')
    .option(
      '--timeout <seconds>',
      `give up after this long (default ${DEFAULT_APPROVAL_TIMEOUT_SECONDS})`,
      wholeSeconds,
      DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    )
    .option('--json', 'print JSON (the approval as it ended)')
    .action(async (id: string, options: { timeout: number; json?: boolean }) => {
      const call = client();
      const { approval, timedOut } = await waitForApproval(async () => call, id, {
        timeoutMs: options.timeout * 1000,
      });
      if (options.json && approval) printJson(approval);
      else if (approval) process.stdout.write(`approval ${id}: ${describeDecision(approval)}\n`);
      if (timedOut)
        throw new ExitError(`approval ${id} still pending after ${options.timeout} s`, EXIT.timedOut);
      // Used: it was approved, and the agent has since used it.
      if (approval?.status !== 'approved' && approval?.status !== 'used')
        process.exitCode = EXIT.approvalRefused;
    });
}
