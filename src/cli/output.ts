import { InvalidArgumentError } from 'commander';
import { EXIT } from './exit-codes';

/** Tables for people, JSON for scripts. No colour, so nothing differs between a TTY and a pipe. */
export function printTable(rows: Record<string, unknown>[], columns: string[]): void {
  if (rows.length === 0) {
    process.stdout.write('(none)\n');
    return;
  }
  const cell = (value: unknown) => (value === undefined || value === null ? '-' : String(value));
  const widths = columns.map((column) =>
    Math.max(column.length, ...rows.map((row) => cell(row[column]).length)),
  );
  const line = (values: string[]) =>
    values
      .map((value, i) => value.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(columns.map((c) => c.toUpperCase()))}\n`);
  for (const row of rows) process.stdout.write(`${line(columns.map((c) => cell(row[c])))}\n`);
}

export const printJson = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
};

/** `--claim key=value`, repeatable. */
export const collectPairs = (value: string, previous: Record<string, string> = {}) => {
  const index = value.indexOf('=');
  if (index < 1) throw new Error(`expected key=value, got "${value}"`);
  return { ...previous, [value.slice(0, index)]: value.slice(index + 1) };
};

/** `audit verify` or `record verify` found something that does not verify. */
export const EXIT_VERIFICATION_FAILED = EXIT.verificationFailed;

/** `--timeout 30`, `--approval-timeout 900`: a whole number of seconds, 1 or more. */
export function wholeSeconds(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1)
    throw new InvalidArgumentError('a whole number of seconds, 1 or more');
  return parsed;
}
