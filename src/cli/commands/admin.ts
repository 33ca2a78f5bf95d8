import type { Command } from 'commander';
import YAML from 'yaml';
import { ADMIN_ROLES, type AdminRole } from '../../domain/types';
import { generateBreakGlassToken } from '../../identity/break-glass';
import { printJson } from '../output';

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

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

/** The config entry for a new token: only its hash, the roles and the expiry. */
function breakGlassEntry(options: GenerateOptions, tokenSha256: string) {
  if (!NAME.test(options.name)) throw new Error('--name: use lower-case letters, digits and dashes');
  const roles = options.roles.split(',').map((role) => role.trim());
  const unknown = roles.filter((role) => !(ADMIN_ROLES as readonly string[]).includes(role));
  if (unknown.length > 0)
    throw new Error(`--roles: unknown role ${unknown.join(', ')} (${ADMIN_ROLES.join(' | ')})`);
  let expiresAt: string | undefined;
  if (options.expiresAt !== undefined) {
    const atMs = Date.parse(options.expiresAt);
    if (Number.isNaN(atMs)) throw new Error('--expires-at: an ISO 8601 date such as 2027-01-31T00:00:00Z');
    expiresAt = new Date(atMs).toISOString();
  }
  return {
    name: options.name,
    tokenSha256,
    roles: roles as AdminRole[],
    ...(expiresAt ? { expiresAt } : {}),
  };
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
