import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** One line of the table: a figure, and the product target it is held against (if it has one). */
export interface Row {
  measure: string;
  value: number;
  unit: string;
  /** `value <= limit` or `value >= limit` passes; absent for figures shown for information. */
  target?: { op: '<=' | '>='; limit: number; label?: string };
}

export type Verdict = 'PASS' | 'FAIL' | 'info';

export const verdictOf = (row: Row): Verdict => {
  if (!row.target) return 'info';
  if (!Number.isFinite(row.value)) return 'FAIL';
  return (row.target.op === '<=' ? row.value <= row.target.limit : row.value >= row.target.limit)
    ? 'PASS'
    : 'FAIL';
};

const format = (value: number, unit: string) => {
  if (!Number.isFinite(value)) return 'n/a';
  const digits = Math.abs(value) >= 100 || Number.isInteger(value) ? 0 : 2;
  return `${value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })} ${unit}`.trim();
};

export function printTable(title: string, rows: readonly Row[]): void {
  const lines = rows.map((row) => [
    row.measure,
    format(row.value, row.unit),
    row.target ? (row.target.label ?? `${row.target.op} ${format(row.target.limit, row.unit)}`) : '',
    verdictOf(row),
  ]);
  const header = ['measure', 'value', 'target', 'result'];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...lines.map((line) => (line[column] as string).length)),
  );
  const render = (cells: string[]) =>
    cells.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ');
  process.stdout.write(
    `\n${title}\n${render(header)}\n${widths.map((width) => '-'.repeat(width)).join('  ')}\n`,
  );
  for (const line of lines) process.stdout.write(`${render(line)}\n`);
}

export function writeJson(directory: string, results: unknown): string {
  mkdirSync(directory, { recursive: true });
  const stamp = new Date()
    .toISOString()
    .replaceAll(':', '-')
    .replace(/\.\d+Z$/, 'Z');
  const file = path.join(directory, `bench-${stamp}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  return file;
}
