import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { auditLines, headerLine, parseAuditLines } from '../../audit/audit-lines';
import { verifyAudit, type AuditVerification } from '../../audit/verify-audit';
import type { Env } from '../../config/env';
import { createApiClient } from '../api-client';
import { fetchAudit, loadJwks, type AuditFilterOptions } from '../audit-source';
import { EXIT_VERIFICATION_FAILED, printJson, printTable } from '../output';

const filterOptions = (command: Command) =>
  command
    .option('--task <id>', "a task's events")
    .option('--lease <id>', "a lease's events")
    .option('--identity <subject>', "a subject's events")
    .option('--issuer <name>', 'with --identity: only this issuer');

const filterOf = (options: AuditFilterOptions): AuditFilterOptions => ({
  task: options.task,
  lease: options.lease,
  identity: options.identity,
  issuer: options.issuer,
});

function printVerification(result: AuditVerification, keysSource: string) {
  const count = (n: number) => n.toLocaleString('en-US');
  const what = result.mode === 'full' ? 'audit log' : 'audit export';
  if (result.ok)
    process.stdout.write(
      `${what}: OK, ${count(result.verifiedEvents)} events verified against ${count(result.seals)} seals\n`,
    );
  else process.stdout.write(`${what}: FAILED, ${result.problems.length} problem(s)\n`);
  for (const problem of result.problems) process.stdout.write(`  ${problem.kind}: ${problem.message}\n`);
  if (result.head)
    process.stdout.write(
      `newest seal: event ${count(result.head.seq)}, id ${result.head.id}, chain ${result.head.hash}, sealed ${result.head.sealedAt}\n`,
    );
  if (result.mode === 'full' && result.unsealed > 0)
    process.stdout.write(`not yet sealed: ${count(result.unsealed)} event(s) after the newest seal\n`);
  process.stdout.write(`keys: ${keysSource}\n`);
}

export function registerAuditCommands(program: Command, env: () => Env) {
  const audit = program
    .command('audit')
    .description('read, export and verify the hash-chained audit log (admin; talks to TASKLEASE_ADDR)');
  const api = () => createApiClient(env().TASKLEASE_ADDR, env().TASKLEASE_TOKEN);

  filterOptions(audit.command('ls').description('list audit events, oldest first'))
    .option('--limit <n>', 'at most this many', '1000')
    .option('--json', 'print JSON')
    .action(async (options: AuditFilterOptions & { limit: string; json?: boolean }) => {
      const query = new URLSearchParams({ limit: options.limit });
      for (const [key, value] of Object.entries(filterOf(options))) if (value) query.set(key, value);
      const result = await api()<{ events: Record<string, unknown>[] }>('GET', `/v1/audit?${query}`);
      if (options.json) return printJson(result);
      printTable(
        result.events.map((event) => ({
          ...event,
          at: new Date(Number(event.atMs)).toISOString(),
          identity: event.subject ? `${String(event.issuer)}/${String(event.subject)}` : undefined,
        })),
        ['at', 'type', 'identity', 'task', 'grant', 'lease', 'actor', 'reason'],
      );
    });

  filterOptions(
    audit
      .command('export')
      .description(
        'export events with their seals as JSONL (a task, a lease, an identity, or the whole log); check it with audit verify --file',
      ),
  )
    .option('--out <file>', 'write here instead of standard output')
    .action(async (options: AuditFilterOptions & { out?: string }) => {
      const filter = filterOf(options);
      const { entries, seals } = await fetchAudit(api(), filter);
      const given = Object.fromEntries(Object.entries(filter).filter(([, value]) => value)) as Record<
        string,
        string
      >;
      const header = headerLine({
        broker: env().TASKLEASE_ADDR,
        createdAt: new Date().toISOString(),
        ...(Object.keys(given).length > 0 ? { filter: given } : {}),
      });
      const text = `${[header, ...auditLines(entries, seals)].join('\n')}\n`;
      if (options.out) await writeFile(options.out, text, { mode: 0o600 });
      else process.stdout.write(text);
      if (options.out)
        process.stderr.write(`wrote ${entries.length} events and ${seals.length} seals to ${options.out}\n`);
    });

  audit
    .command('verify')
    .description(
      "verify the audit chain: every event against its signed seal, every seal against the one before; the broker's log, or a file (a sink or an export)",
    )
    .option('--file <path>', 'verify this JSONL file (audit.file sink or audit export) instead of the broker')
    .option('--jwks <path>', "the broker's public keys to trust (default: fetched from TASKLEASE_ADDR)")
    .option('--json', 'print JSON')
    .action(async (options: { file?: string; jwks?: string; json?: boolean }) => {
      const { jwks, source } = await loadJwks(options.jwks, env().TASKLEASE_ADDR);
      let input: Parameters<typeof verifyAudit>[0];
      if (options.file) {
        const parsed = parseAuditLines(await readFile(options.file, 'utf8'));
        input = { ...parsed, jwks, mode: parsed.header?.filter ? 'partial' : 'full' };
      } else {
        input = { ...(await fetchAudit(api(), {})), jwks, mode: 'full' };
      }
      const result = await verifyAudit(input);
      if (options.json) printJson({ ...result, keys: source });
      else printVerification(result, source);
      if (!result.ok) process.exitCode = EXIT_VERIFICATION_FAILED;
    });
}
