import type { Command } from 'commander';
import YAML from 'yaml';
import { breakGlassEntrySchema, type BreakGlassConfig } from '../../config/break-glass';
import { ADMIN_ROLES } from '../../domain/types';
import { generateBreakGlassToken } from '../../identity/break-glass';
import { printJson } from '../output';

const WARNING = `
The token above is shown once and is not stored anywhere: keep it offline (a sealed envelope, a safe,
an offline password vault), never in the repository, a CI secret or a chat. Put only the entry below in
the config's breakGlass list. Anyone holding the token has its roles on every admin route.
`;

interface GenerateOptions {
  name: string;
  roles: string;
  expiresAt?: string;
  json?: boolean;
}

const OPTION_OF: Record<string, string> = { name: '--name', roles: '--roles', expiresAt: '--expires-at' };

/** The config entry for a new token (only its hash), checked by the very schema the broker loads it with. */
function breakGlassEntry(options: GenerateOptions, tokenSha256: string): BreakGlassConfig {
  // A date alone (2027-01-31) is taken as midnight UTC and written out in full.
  const atMs = options.expiresAt === undefined ? undefined : Date.parse(options.expiresAt);
  const result = breakGlassEntrySchema.safeParse({
    name: options.name,
    tokenSha256,
    roles: options.roles.split(',').map((role) => role.trim()),
    expiresAt: atMs === undefined || Number.isNaN(atMs) ? options.expiresAt : new Date(atMs).toISOString(),
  });
  if (result.success) return result.data;
  const [issue] = result.error.issues;
  const field = String(issue?.path[0]);
  throw new Error(`${OPTION_OF[field] ?? field}: ${issue?.message}`);
}

export function registerAdminCommands(program: Command) {
  program
    .command('admin')
    .description('broker administration')
    .command('break-glass')
    .description('break-glass admin tokens, for when the identity provider is down')
    .command('generate')
    .description('print a new break-glass token (once) and the config entry holding its SHA-256')
    .option('--name <name>', 'the entry name, shown as the caller in the audit log', 'emergency')
    .option('--roles <list>', `comma-separated: ${ADMIN_ROLES.join(', ')}`, 'admin')
    .option('--expires-at <date>', 'refuse the token after this instant (ISO 8601)')
    .option('--json', 'print {token, entry} as JSON')
    .action((options: GenerateOptions) => {
      const { token, tokenSha256 } = generateBreakGlassToken();
      const entry = breakGlassEntry(options, tokenSha256);
      if (options.json) printJson({ token, entry });
      else process.stdout.write(`${token}\n\nbreakGlass:\n${YAML.stringify([entry], { indent: 2 })}`);
      process.stderr.write(WARNING);
    });
}
