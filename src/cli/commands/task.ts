import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { verifyAudit } from '../../audit/verify-audit';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';
import { fetchAudit, loadJwks } from '../audit-source';
import { EXIT_VERIFICATION_FAILED, printJson, printTable } from '../output';
import { compareRecord, reconstructTask, verifyTaskRecord, type TaskRecord } from '../task-reconstruction';

const readRecord = async (file: string) =>
  (file === '-' ? await readStdin() : await readFile(file, 'utf8')).trim();

async function readStdin(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  return text;
}

/** A record from `tasklease` output may be the bare JWS or the JSON answer around it. */
const jwsOf = (text: string): string => {
  if (!text.startsWith('{')) return text;
  const parsed = JSON.parse(text) as { record?: unknown };
  if (typeof parsed.record !== 'string') throw new Error('no "record" in that JSON');
  return parsed.record;
};

const line = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

export function registerTaskCommands(program: Command, env: () => Env) {
  program
    .command('task')
    .description('reconstruct tasks from the audit log (admin; talks to TASKLEASE_ADDR)')
    .command('show')
    .description(
      'what a task was and what happened in it, from its audit events (each checked against its seal) and, with --record, its signed record',
    )
    .argument('<taskId>')
    .option('--record <file>', 'the signed task record (a JWS, or the JSON answer holding it; - for stdin)')
    .option('--jwks <path>', "the broker's public keys to trust (default: fetched from TASKLEASE_ADDR)")
    .option('--json', 'print JSON')
    .action(async (taskId: string, options: { record?: string; jwks?: string; json?: boolean }) => {
      const call = createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);
      const { jwks, source } = await loadJwks(options.jwks, env().TASKLEASE_ADDR);
      const exported = await fetchAudit(call, { task: taskId });
      if (exported.entries.length === 0) throw new Error(`no audit events for task ${taskId}`);
      const verification = await verifyAudit({
        ...exported,
        jwks,
        mode: 'partial',
        filter: { task: taskId },
        unsealed: { nowMs: Date.now(), graceMs: 30_000 },
      });
      const story = reconstructTask(taskId, exported.entries);
      let record: { verified: boolean; differences: string[]; error?: string } | undefined;
      if (options.record) {
        try {
          const payload: TaskRecord = await verifyTaskRecord(jwsOf(await readRecord(options.record)), jwks);
          record = { verified: true, differences: compareRecord(payload, story) };
        } catch (error) {
          record = { verified: false, differences: [], error: (error as Error).message };
        }
      }
      const ok = verification.ok && (!record || (record.verified && record.differences.length === 0));
      if (!ok) process.exitCode = EXIT_VERIFICATION_FAILED;
      if (options.json) return printJson({ ...story, verification, record, keys: source });

      const { task } = story;
      line(`task      ${task.id}`);
      line(`identity  ${task.identity ?? '(not in the log)'}`);
      line(`purpose   ${task.purpose ?? '-'}`);
      line(`ticket    ${task.ticket ?? '-'}`);
      line(`ref       ${task.ref ?? '-'}`);
      for (const [claim, value] of Object.entries(task.job)) line(`job       ${claim}=${value}`);
      line(`declared  ${task.declaredAt ?? '-'}`);
      line(`completed ${task.completedAt ? `${task.completedAt} (${task.outcome})` : '-'}`);
      line('');
      printTable(story.leases as unknown as Record<string, unknown>[], [
        'lease',
        'grant',
        'provider',
        'issuedAt',
        'state',
        'revocation',
      ]);
      for (const denial of story.denials) line(`denied: ${denial.grant} at ${denial.at}: ${denial.reason}`);
      for (const approval of story.approvals) {
        const decided = approval.decidedBy ? ` by ${approval.decidedBy}: ${approval.reason ?? ''}` : '';
        const used = approval.lease ? ` (lease ${approval.lease})` : '';
        line(
          `approval: ${approval.grant} requested ${approval.requestedAt}, ${approval.status}${decided}${used}`,
        );
      }
      line('');
      line(
        verification.ok
          ? `audit: ${verification.verifiedEvents} events, each verified against its seal (that none is missing is what tasklease audit verify checks)`
          : `audit: FAILED: ${verification.problems.map((problem) => problem.message).join('; ')}`,
      );
      if (record)
        line(
          !record.verified
            ? `record: does not verify: ${record.error}`
            : record.differences.length === 0
              ? 'record: signature verified; agrees with the audit log'
              : `record: signature verified; disagrees with the audit log:\n  ${record.differences.join('\n  ')}`,
        );
      line(`keys: ${source}`);
    });

  program
    .command('record')
    .description('signed task records')
    .command('verify')
    .description("check a task record's signature offline against a JWKS and print what it records")
    .argument('<file>', 'the record (a JWS, or the JSON answer holding it); - for stdin')
    .option('--jwks <path>', "the broker's public keys to trust (default: fetched from TASKLEASE_ADDR)")
    .option('--json', 'print JSON')
    .action(async (file: string, options: { jwks?: string; json?: boolean }) => {
      const { jwks, source } = await loadJwks(options.jwks, env().TASKLEASE_ADDR);
      let payload: TaskRecord;
      try {
        payload = await verifyTaskRecord(jwsOf(await readRecord(file)), jwks);
      } catch (error) {
        process.exitCode = EXIT_VERIFICATION_FAILED;
        if (options.json)
          return printJson({ verified: false, error: (error as Error).message, keys: source });
        return line(`record: does not verify: ${(error as Error).message}`);
      }
      if (options.json) return printJson({ verified: true, record: payload, keys: source });
      const { task } = payload;
      line(
        `record: verified (issuer ${payload.iss}, signed ${new Date((payload.iat ?? 0) * 1000).toISOString()})`,
      );
      line(`task ${task.id} by ${task.issuer}/${task.subject}: ${task.purpose}`);
      line(
        `ticket ${task.ticket ?? '-'}, ref ${task.ref ?? '-'}, state ${task.state}, outcome ${task.outcome ?? '-'}`,
      );
      printTable(payload.leases as unknown as Record<string, unknown>[], [
        'id',
        'grant',
        'provider',
        'credentialSha256',
      ]);
      line(`keys: ${source}`);
    });
}
