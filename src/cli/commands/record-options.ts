import type { Command } from 'commander';

/** `--valid-days` or `--expires-at` (the broker refuses both; neither means the longest it allows). */
export const withValidity = (command: Command) =>
  command
    .option('--valid-days <n>', 'valid for this many days from now (capped by entitlements.maxValidityDays)')
    .option('--expires-at <time>', 'valid until this ISO 8601 time (instead of --valid-days)');

export function validityBody(options: { validDays?: string; expiresAt?: string }) {
  return {
    ...(options.validDays ? { validDays: Number(options.validDays) } : {}),
    ...(options.expiresAt ? { expiresAt: options.expiresAt } : {}),
  };
}

/** "in 3d 4h" for a table, from seconds. */
export function expiresIn(seconds: number): string {
  if (seconds <= 0) return 'expired';
  const days = Math.floor(seconds / 86_400);
  const hours = Math.floor((seconds % 86_400) / 3600);
  return days > 0 ? `${days}d ${hours}h` : `${hours}h ${Math.floor((seconds % 3600) / 60)}m`;
}

/** Query parameters from the options that are set. */
export function queryOf(options: Record<string, unknown>, names: readonly string[]): URLSearchParams {
  const query = new URLSearchParams();
  for (const name of names) {
    const value = options[name];
    if (typeof value === 'string') query.set(name, value);
  }
  return query;
}
