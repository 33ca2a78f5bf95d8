import { z } from 'zod';
import { ADMIN_ROLES, BREAK_GLASS_TOKEN_PREFIX } from '../domain/types';
import { name } from './names';

/**
 * A break-glass token for when the identity provider is down: the config holds only the SHA-256 of the token
 * (`tasklease admin break-glass generate` prints both), so a leaked config file opens nothing.
 */
export const breakGlassEntrySchema = z.strictObject({
  /** Shown as the caller's subject (issuer `break-glass`) in the audit log, the logs and rate limits. */
  name,
  tokenSha256: z
    .string()
    .refine(
      (value) => !value.startsWith(BREAK_GLASS_TOKEN_PREFIX),
      'this is the token itself: put only its SHA-256 here and keep the token offline',
    )
    .pipe(z.string().regex(/^[0-9a-f]{64}$/, 'the SHA-256 of the token as 64 lower-case hex characters')),
  roles: z.array(z.enum(ADMIN_ROLES)).min(1).default(['admin']),
  /** After this instant the token is refused (401). */
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});

export type BreakGlassConfig = z.output<typeof breakGlassEntrySchema>;

/** Each break-glass entry has its own name and its own token, so the audit tells who used which. */
export function checkBreakGlass(entries: readonly BreakGlassConfig[], ctx: z.RefinementCtx) {
  const names = new Set<string>();
  const hashes = new Set<string>();
  entries.forEach((entry, index) => {
    if (names.has(entry.name))
      ctx.addIssue({ code: 'custom', path: ['breakGlass', index, 'name'], message: 'duplicate name' });
    if (hashes.has(entry.tokenSha256))
      ctx.addIssue({
        code: 'custom',
        path: ['breakGlass', index, 'tokenSha256'],
        message: 'the same token as another entry',
      });
    names.add(entry.name);
    hashes.add(entry.tokenSha256);
  });
}

/** Paths of string values that are break-glass tokens: a token pasted anywhere in the file is refused. */
export function pathsOfPlaintextTokens(
  value: unknown,
  path: (string | number)[] = [],
): (string | number)[][] {
  if (typeof value === 'string') return value.startsWith(BREAK_GLASS_TOKEN_PREFIX) ? [path] : [];
  if (!value || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, child]) =>
    pathsOfPlaintextTokens(child, [...path, Array.isArray(value) ? Number(key) : key]),
  );
}
