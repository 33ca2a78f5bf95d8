import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Request, Response } from 'express';
import { BrokerError, ERROR_CATALOGUE, type ErrorCode } from '../../src/domain/errors';
import { errorHandler } from '../../src/http/errors';
import { NotReplicatedError } from '../../src/redis/durable-writes';
import type { Logger } from '../../src/observability/logger';

const DOC = path.resolve(__dirname, '../../docs/errors.md');

interface DocRow {
  code: string;
  status: number;
  when: string;
  todo: string;
}

/** The rows of docs/errors.md's code table: `| \`code\` | status | when | what to do |`. */
function documentedCodes(markdown: string): DocRow[] {
  return markdown
    .split('\n')
    .map((line) => /^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|(.*)\|(.*)\|\s*$/.exec(line))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => ({
      code: match[1]!,
      status: Number(match[2]),
      when: match[3]!.trim(),
      todo: match[4]!.trim(),
    }));
}

const codes = Object.keys(ERROR_CATALOGUE) as ErrorCode[];

describe('docs/errors.md documents the error catalogue', () => {
  const markdown = readFileSync(DOC, 'utf8');
  const rows = documentedCodes(markdown);
  const byCode = new Map(rows.map((row) => [row.code, row]));

  it('parses a table (a sanity check on the parser itself)', () => {
    expect(rows.length).toBeGreaterThanOrEqual(codes.length);
    expect(documentedCodes('| `made_up` | 418 | when | what |\n| nope | 200 | x | y |')).toEqual([
      { code: 'made_up', status: 418, when: 'when', todo: 'what' },
    ]);
  });

  it.each(codes)('documents %s with its HTTP status, when it happens and what to do', (code) => {
    const row = byCode.get(code);
    if (!row)
      throw new Error(
        `docs/errors.md has no table row for \`${code}\`: add | \`${code}\` | ${ERROR_CATALOGUE[code].status} | when | what to do |`,
      );
    expect(row.status).toBe(ERROR_CATALOGUE[code].status);
    expect(row.when.length).toBeGreaterThan(10);
    expect(row.todo.length).toBeGreaterThan(3);
  });

  it('documents no code the broker does not have, and each code once', () => {
    expect(rows.map((row) => row.code).filter((code) => !(code in ERROR_CATALOGUE))).toEqual([]);
    expect(rows.map((row) => row.code).sort()).toEqual([...new Set(rows.map((row) => row.code))].sort());
  });

  it('documents the error body shape and what callers never see', () => {
    expect(markdown).toMatch(/\{\s*"error": "invalid_request", "message": "[^"]+" \}/);
    expect(markdown).toMatch(/401 always carries the same message/);
    expect(markdown).toMatch(/5xx never leaks detail/);
  });
});

describe('what a caller sees of an error (the edge error handler)', () => {
  /** Runs the app's error handler on `error` and returns the status and body a caller would get. */
  const answer = (error: unknown) => {
    const logged: unknown[] = [];
    const logger = {
      error: (...args: unknown[]) => logged.push(args),
      debug: () => undefined,
    } as unknown as Logger;
    const sent: { status?: number; body?: unknown } = {};
    const res = {
      headersSent: false,
      status(code: number) {
        sent.status = code;
        return this;
      },
      json(body: unknown) {
        sent.body = body;
        return this;
      },
    } as unknown as Response;
    errorHandler(logger)(error, { method: 'POST', path: '/v1/tasks' } as Request, res, () => undefined);
    // pino serialises `err`; here the logged Error objects are read directly.
    const loggedText = JSON.stringify(logged, (_key, value) =>
      value instanceof Error ? value.message : value,
    );
    return { ...sent, logged: loggedText };
  };

  it.each(codes.filter((code) => ERROR_CATALOGUE[code].status < 500))(
    '%s: its status and its message, and nothing else',
    (code) => {
      const { status, body } = answer(
        new BrokerError(code, 'a message for the caller', { detail: 'for the log only' }),
      );
      expect(status).toBe(ERROR_CATALOGUE[code].status);
      expect(body).toEqual({ error: code, message: 'a message for the caller' });
    },
  );

  it('an unexpected exception: 500 internal, a generic message, the detail only in the log', () => {
    const { status, body, logged } = answer(
      new TypeError("Cannot read properties of undefined (reading 'vault.internal token=s.abcdef')"),
    );
    expect(status).toBe(500);
    expect(body).toEqual({ error: 'internal', message: 'internal error' });
    expect(logged).toContain('vault.internal');
  });

  it("Redis going away: 503 unavailable with a fixed sentence, not the driver's message", () => {
    const { status, body } = answer(new Error('Connection is closed. redis://:hunter2@10.0.0.5:6379'));
    expect(status).toBe(503);
    expect(body).toEqual({ error: 'unavailable', message: expect.not.stringContaining('hunter2') });
    expect((body as { message: string }).message).not.toContain('10.0.0.5');
  });

  it('an internal BrokerError never shows its message', () => {
    const { status, body } = answer(
      new BrokerError('internal', 'lease id collision on 1234', { detail: 'lease existed' }),
    );
    expect(status).toBe(500);
    expect(body).toEqual({ error: 'internal', message: 'internal error' });
  });

  it("backend_refused: 502 with the broker's fixed sentence; the backend's answer only in the log", () => {
    const { status, body, logged } = answer(
      new BrokerError('backend_refused', 'AWS STS refused to issue the session; nothing was issued', {
        detail: 'AccessDenied: User arn:aws:sts::123456789012:assumed-role/broker is not authorized',
      }),
    );
    expect(status).toBe(502);
    expect(body).toEqual({
      error: 'backend_refused',
      message: 'AWS STS refused to issue the session; nothing was issued',
    });
    expect(logged).toContain('is not authorized');
  });

  it('only internal, unavailable, not_replicated and backend_refused are server-side codes', () => {
    expect(codes.filter((code) => ERROR_CATALOGUE[code].status >= 500).sort()).toEqual([
      'backend_refused',
      'internal',
      'not_replicated',
      'unavailable',
    ]);
  });

  it('answers replicas that did not confirm a write as 503 not_replicated, saying so', () => {
    const { status, body } = answer(new NotReplicatedError(0, 1, 'ok'));
    expect(status).toBe(503);
    expect(body).toEqual({
      error: 'not_replicated',
      message: 'the Redis replicas did not confirm the write in time; retry',
    });
  });
});
