import { readFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const doc = readFileSync(path.join(ROOT, 'docs', 'architecture.md'), 'utf8');
const section = doc.slice(
  doc.indexOf('## Failure behaviour, as a red team tried it'),
  doc.indexOf('## Logging and redaction'),
);
const rows = [...section.matchAll(/^\| (.+?) \| .+? \| `(tests\/[^`]+\.test\.ts)` › "(.+)" \|$/gm)].map(
  ([, scenario, file, title]) => ({
    scenario: scenario as string,
    file: file as string,
    title: title as string,
  }),
);

/** The red-team table in docs/architecture.md: each row names a test that exists, so the table stays true. */
describe('the red-team table names tests that exist', () => {
  it('has its rows', () => {
    expect(rows.length).toBeGreaterThanOrEqual(20);
  });
  it.each(rows)('$scenario → $file', ({ file, title }) => {
    const source = readFileSync(path.join(ROOT, file), 'utf8');
    expect(source).toContain(title);
  });
});
