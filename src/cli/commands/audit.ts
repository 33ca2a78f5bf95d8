import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { auditLines, headerLine, parseAuditLines } from '../../audit/audit-lines';
import { fromNewestTrim } from '../../audit/audit-gaps';
import { compareStreamIds } from '../../audit/stream-ids';
import { verifyAudit, type AuditVerification, type VerifyAuditInput } from '../../audit/verify-audit';
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

/** A live log's newest events wait about a second for their seal; longer means the sealer is not running. */
const UNSEALED_GRACE_MS = 30_000;

function parseHead(text: string): { seq: number; hash: string } {
  const match = /^(\d+):([0-9a-f]{64})$/.exec(text);
  if (!match) throw new Error('--expect takes seq:hash, as audit verify prints it (e.g. 1234:3f2a…)');
  return { seq: Number(match[1]), hash: match[2] as string };
}

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
      `newest seal: event ${count(result.head.seq)} (id ${result.head.id}, sealed ${result.head.sealedAt}); note ${result.head.seq}:${result.head.hash} for --expect\n`,
    );
  for (const restore of result.restores) {
    const { redisHead, fileHead } = restore;
    process.stdout.write(
      `restore: Redis came back from an older snapshot (found ${restore.detectedAt}): its chain went on from event ${count(redisHead.seq)} (seal ${redisHead.id || 'none'}, hash ${redisHead.hash}) while the audit file held up to event ${count(fileHead.seq)} (seal ${fileHead.id}, hash ${fileHead.hash}); ${count(restore.eventsBeyond)} event(s) beyond Redis are ${restore.recordedIn === 'file' ? 'kept in this file, sealed as they were' : `in the audit file${restore.file ? ` ${restore.file}` : ''}`}\n`,
    );
  }
  if (result.trimmed)
    process.stdout.write(
      `trimmed: the events up to event ${count(result.trimmed.anchor.seq)} (seal ${result.trimmed.anchor.id}, hash ${result.trimmed.anchor.hash}) were trimmed from Redis by the retention at ${result.trimmed.trimmedAt}; the chain is verified from that seal on; they are kept in ${result.trimmed.keptIn || 'the audit files'}\n`,
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
      let { entries, seals } = await fetchAudit(api(), filter);
      // The newest events may be a second from their seal: wait for it once, so the export is all evidence.
      if (
        entries.length > 0 &&
        !seals.some((seal) => compareStreamIds(seal.id, entries[entries.length - 1]?.id ?? '') >= 0)
      ) {
        await new Promise((resolve) => setTimeout(resolve, 2000));
        ({ entries, seals } = await fetchAudit(api(), filter));
      }
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
      "verify the audit chain: every event against its signed seal, every seal against the one before; the broker's log, or a file (the audit.file sink, or an export with --export)",
    )
    .option(
      '--file <path>',
      'verify this JSONL file instead of the broker: the audit.file sink, or an export',
    )
    .option(
      '--export',
      'the file is an export of some events (audit export --task ...): check each, not the chain',
    )
    .option('--jwks <path>', "the broker's public keys to trust (default: fetched from TASKLEASE_ADDR)")
    .option(
      '--expect <seq:hash>',
      'a head noted earlier (from a past verify or the API log): the chain must still pass through it',
    )
    .option('--json', 'print JSON')
    .action(
      async (options: {
        file?: string;
        export?: boolean;
        jwks?: string;
        expect?: string;
        json?: boolean;
      }) => {
        const expectHead = options.expect ? parseHead(options.expect) : undefined;
        const { jwks, source } = await loadJwks(options.jwks, env().TASKLEASE_ADDR);
        let input: VerifyAuditInput;
        if (options.file) {
          let parsed: ReturnType<typeof parseAuditLines>;
          try {
            parsed = parseAuditLines(await readFile(options.file, 'utf8'));
          } catch (error) {
            process.exitCode = EXIT_VERIFICATION_FAILED;
            const problem = { kind: 'malformed', message: `${options.file}: ${(error as Error).message}` };
            if (options.json) return printJson({ ok: false, problems: [problem], keys: source });
            return void process.stdout.write(`audit file: FAILED\n  ${problem.kind}: ${problem.message}\n`);
          }
          const mode = options.export ? 'partial' : 'full';
          if (parsed.header?.filter && !options.export)
            process.stderr.write(
              'tasklease: this file is an export of some events; to check each of them, add --export\n',
            );
          // The header is not signed: it only says what the export claims to hold, which is then checked.
          const filter = options.export ? parsed.header?.filter : undefined;
          input = {
            entries: parsed.entries,
            seals: parsed.seals,
            restores: parsed.restores,
            jwks,
            mode,
            filter,
            expectHead,
            unsealed: 'fail',
          };
        } else {
          // A trim racing the read leaves pages from before it: read as Redis holds the log now.
          const live = await fetchAudit(api(), {});
          input = {
            ...fromNewestTrim(live.entries, live.seals),
            jwks,
            mode: 'full',
            expectHead,
            unsealed: { nowMs: Date.now(), graceMs: UNSEALED_GRACE_MS },
          };
        }
        const result = await verifyAudit(input);
        if (options.json) printJson({ ...result, keys: source });
        else printVerification(result, source);
        if (!result.ok) process.exitCode = EXIT_VERIFICATION_FAILED;
      },
    );
}
