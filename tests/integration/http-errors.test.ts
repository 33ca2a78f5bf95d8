import { generateKeyPair, SignJWT } from 'jose';
import { startTestBroker, type TestBroker } from '../support/broker';

/**
 * Bad input gets a clear 4xx with a stable code and a body of exactly `{error, message}`; nothing is
 * half-written (no task, no lease, no audit event) when a call is refused.
 */
describe('bad input is refused with a stable error code and leaves nothing behind', () => {
  let broker: TestBroker;
  let admin: string;
  let subjectCount = 0;
  beforeAll(async () => {
    broker = await startTestBroker();
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
  });
  afterAll(() => broker.close());

  /** Each test acts as its own workload, so "nothing was written" can be checked per subject. */
  const newAgent = async () => {
    const subject = `http-errors-${++subjectCount}`;
    return { subject, token: await broker.agents.sign({ sub: subject }) };
  };

  const raw = async (
    method: string,
    route: string,
    options: { token?: string; contentType?: string; body?: string } = {},
  ) => {
    const headers: Record<string, string> = {};
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.contentType) headers['content-type'] = options.contentType;
    const response = await fetch(`${broker.url}${route}`, { method, headers, body: options.body });
    const text = await response.text();
    return { status: response.status, body: JSON.parse(text) as Record<string, unknown> };
  };

  /** The error body is exactly `{error, message}` with the expected code. */
  const expectError = (response: { status: number; body: unknown }, status: number, code: string) => {
    expect({ status: response.status, error: (response.body as { error?: string }).error }).toEqual({
      status,
      error: code,
    });
    expect(Object.keys(response.body as object).sort()).toEqual(['error', 'message']);
    expect(typeof (response.body as { message: unknown }).message).toBe('string');
    expect((response.body as { message: string }).message.length).toBeGreaterThan(0);
  };

  /** What the broker recorded about a workload: audit events and leases, via the admin API. */
  const traceOf = async (subject: string) => {
    const audit = await broker.call('GET', `/v1/audit?identity=${subject}&issuer=agents`, admin);
    const leases = await broker.call('GET', `/v1/leases?identity=${subject}&issuer=agents`, admin);
    expect(audit.status).toBe(200);
    expect(leases.status).toBe(200);
    return { events: audit.body.events.map((e: { type: string }) => e.type), leases: leases.body.leases };
  };

  const declare = (token: string, body: Record<string, unknown> = {}) =>
    broker.call('POST', '/v1/tasks', token, {
      purpose: 'errors test',
      ticket: 'OPS-9',
      ref: 'refs/heads/main',
      ...body,
    });

  const expectNoLease = async (token: string, taskId: string) => {
    const view = await broker.call('GET', `/v1/tasks/${taskId}`, token);
    expect(view.status).toBe(200);
    expect(view.body.leases).toEqual([]);
    expect(view.body.activeLeases ?? 0).toBe(0);
  };

  describe('body parsing', () => {
    it('answers 400 invalid_json to a malformed JSON body and declares nothing', async () => {
      const { subject, token } = await newAgent();
      const response = await raw('POST', '/v1/tasks', {
        token,
        contentType: 'application/json',
        body: '{"purpose": "x", "ticket": "OPS-1"',
      });
      expectError(response, 400, 'invalid_json');
      expect(await traceOf(subject)).toEqual({ events: [], leases: [] });
    });

    it('answers 413 payload_too_large to a body over 64 KiB', async () => {
      const { subject, token } = await newAgent();
      const body = JSON.stringify({ purpose: 'x'.repeat(65 * 1024), ticket: 'OPS-1' });
      const response = await raw('POST', '/v1/tasks', { token, contentType: 'application/json', body });
      expectError(response, 413, 'payload_too_large');
      expect(await traceOf(subject)).toEqual({ events: [], leases: [] });
    });

    it('accepts a body just under the limit (the limit is 64 KiB, not less)', async () => {
      const { token } = await newAgent();
      // Valid JSON of ~60 KiB: it reaches validation (purpose is capped at 500 characters) instead of 413.
      const body = JSON.stringify({ purpose: 'x'.repeat(60 * 1024), ticket: 'OPS-1' });
      const response = await raw('POST', '/v1/tasks', { token, contentType: 'application/json', body });
      expectError(response, 400, 'invalid_request');
      expect(response.body.message).toMatch(/purpose/);
    });

    it('answers 415 unsupported_media_type to a text/plain body instead of reading it as empty', async () => {
      const { subject, token } = await newAgent();
      const response = await raw('POST', '/v1/tasks', {
        token,
        contentType: 'text/plain',
        body: '{"purpose":"x","ticket":"OPS-1"}',
      });
      expectError(response, 415, 'unsupported_media_type');
      expect(await traceOf(subject)).toEqual({ events: [], leases: [] });
    });

    it('answers 415 to a form body on a JSON call', async () => {
      const { token } = await newAgent();
      const task = await declare(token);
      const response = await raw('POST', `/v1/tasks/${task.body.taskId}/credentials`, {
        token,
        contentType: 'application/x-www-form-urlencoded',
        body: 'grant=artifacts-read',
      });
      expectError(response, 415, 'unsupported_media_type');
      await expectNoLease(token, task.body.taskId);
    });
  });

  describe('validation of a task declaration', () => {
    it.each([
      ['purpose is a number', { purpose: 5 }, 'purpose'],
      ['ttlSeconds is a string', { ttlSeconds: 'x' }, 'ttlSeconds'],
      ['ttlSeconds is negative', { ttlSeconds: -5 }, 'ttlSeconds'],
      ['ttlSeconds is a fraction', { ttlSeconds: 1.5 }, 'ttlSeconds'],
      ['grants is not an array', { grants: 'artifacts-read' }, 'grants'],
      ['an unknown field', { purpose: 'ok', colour: 'blue' }, 'colour'],
      ['a control character in the ticket', { ticket: 'OPS-1\u0007beep' }, 'ticket'],
      ['a newline inside the ticket', { ticket: 'OPS-1\nX-Injected: yes' }, 'ticket'],
      ['an empty purpose', { purpose: '   ' }, 'purpose'],
    ])(
      'answers 400 invalid_request naming the field when %s, and declares nothing',
      async (_label, fields, field) => {
        const { subject, token } = await newAgent();
        const response = await declare(token, fields);
        expectError(response, 400, 'invalid_request');
        expect(response.body.message).toContain(field);
        expect(await traceOf(subject)).toEqual({ events: [], leases: [] });
      },
    );

    it.each([
      ['[]', 'invalid_request'],
      ['"OPS-1"', 'invalid_json'],
      ['null', 'invalid_json'],
    ])('answers 400 to the body %s (%s): a declaration is a JSON object', async (body, code) => {
      const { subject, token } = await newAgent();
      const response = await raw('POST', '/v1/tasks', { token, contentType: 'application/json', body });
      expectError(response, 400, code);
      expect(await traceOf(subject)).toEqual({ events: [], leases: [] });
    });

    it('answers 400 unknown_grant when the task declares a grant that is not configured, and declares nothing', async () => {
      const { subject, token } = await newAgent();
      const response = await declare(token, { grants: ['artifacts-read', 'no-such-grant'] });
      expectError(response, 400, 'unknown_grant');
      expect(response.body.message).toContain('no-such-grant');
      expect(await traceOf(subject)).toEqual({ events: [], leases: [] });
    });

    it('still declares a valid task for the same workload afterwards', async () => {
      const { subject, token } = await newAgent();
      expect((await declare(token, { purpose: 5 })).status).toBe(400);
      const ok = await declare(token);
      expect(ok.status).toBe(201);
      expect((await traceOf(subject)).events).toEqual(['task.declared']);
    });
  });

  describe('validation of a credential request: every refusal leaves the task without a lease', () => {
    it.each([
      { label: 'grant is missing', body: {}, mention: 'grant', status: 400, code: 'invalid_request' },
      {
        label: 'grant is a number',
        body: { grant: 7 },
        mention: 'grant',
        status: 400,
        code: 'invalid_request',
      },
      {
        label: 'ttlSeconds is a string',
        body: { grant: 'artifacts-read', ttlSeconds: 'x' },
        mention: 'ttlSeconds',
        status: 400,
        code: 'invalid_request',
      },
      {
        label: 'ttlSeconds is negative',
        body: { grant: 'artifacts-read', ttlSeconds: -1 },
        mention: 'ttlSeconds',
        status: 400,
        code: 'invalid_request',
      },
      {
        label: 'ttlSeconds is zero',
        body: { grant: 'artifacts-read', ttlSeconds: 0 },
        mention: 'ttlSeconds',
        status: 400,
        code: 'invalid_request',
      },
      {
        label: 'an unknown field',
        body: { grant: 'artifacts-read', scope: 'admin' },
        mention: 'scope',
        status: 400,
        code: 'invalid_request',
      },
      {
        label: 'a control character in the reason',
        body: { grant: 'artifacts-read', reason: 'because\u0000' },
        mention: 'reason',
        status: 400,
        code: 'invalid_request',
      },
      {
        label: 'the grant is not configured',
        body: { grant: 'no-such-grant' },
        mention: 'no-such-grant',
        status: 400,
        code: 'unknown_grant',
      },
    ])('$label → $status $code', async ({ body, mention, status, code }) => {
      const { token } = await newAgent();
      const task = await declare(token);
      expect(task.status).toBe(201);
      const response = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, token, body);
      expectError(response, status, code);
      expect(response.body.message).toContain(mention);
      await expectNoLease(token, task.body.taskId);
    });

    it("answers 403 grant_not_declared for a configured grant outside the task's declared grants", async () => {
      const { subject, token } = await newAgent();
      const task = await declare(token, { grants: ['artifacts-read'] });
      expect(task.status).toBe(201);
      // The policy would permit artifacts-write on main: only the declaration stands in the way.
      const response = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, token, {
        grant: 'artifacts-write',
      });
      expectError(response, 403, 'grant_not_declared');
      await expectNoLease(token, task.body.taskId);
      expect((await traceOf(subject)).events).toEqual(['task.declared']);

      const declared = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, token, {
        grant: 'artifacts-read',
      });
      expect(declared.status).toBe(201);
    });

    it('answers 400 invalid_request to a task id of the wrong format, 404 to a well-formed unknown one', async () => {
      const { token } = await newAgent();
      for (const badId of ['not.an.id', 'x'.repeat(65), 'a%20b']) {
        const response = await broker.call('POST', `/v1/tasks/${badId}/credentials`, token, {
          grant: 'artifacts-read',
        });
        expectError(response, 400, 'invalid_request');
        expect(response.body.message).toMatch(/taskId/);
        expectError(await broker.call('GET', `/v1/tasks/${badId}`, token), 400, 'invalid_request');
      }
      expectError(await broker.call('GET', '/v1/tasks/abcdef0123456789', token), 404, 'not_found');
    });
  });

  describe('routes and authentication', () => {
    it('answers 404 not_found to an unknown route, with or without a token', async () => {
      const { token } = await newAgent();
      expectError(await broker.call('GET', '/v2/tasks', null), 404, 'not_found');
      expectError(await broker.call('GET', '/nope', token), 404, 'not_found');
      expectError(await broker.call('DELETE', '/healthz', null), 404, 'not_found');
    });

    it('answers 401 unauthenticated with one generic message whatever was wrong with the token', async () => {
      const { privateKey } = await generateKeyPair('ES256');
      const foreign = await broker.agents.sign({ sub: 'planner' }, { key: privateKey });
      const expired = await broker.agents.sign({ sub: 'planner', exp: Math.floor(Date.now() / 1000) - 3600 });
      const noneAlg = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(
        JSON.stringify({ iss: broker.agents.iss, aud: 'tasklease', sub: 'planner', exp: 9_999_999_999 }),
      ).toString('base64url')}.`;
      const unknownIssuer = await new SignJWT({ sub: 'planner', aud: 'tasklease' })
        .setProtectedHeader({ alg: 'ES256' })
        .setIssuer('https://evil.test')
        .setExpirationTime('5m')
        .sign(privateKey);
      const messages = new Set<string>();
      for (const token of [null, 'garbage', foreign, expired, noneAlg, unknownIssuer]) {
        const response = await broker.call('POST', '/v1/tasks', token, { purpose: 'x', ticket: 'OPS-1' });
        expectError(response, 401, 'unauthenticated');
        messages.add(response.body.message);
      }
      const basic = await raw('GET', '/v1/leases', { token: undefined, contentType: undefined });
      expectError(basic, 401, 'unauthenticated');
      messages.add(basic.body.message as string);
      expect(messages.size).toBe(1);
    });
  });

  describe('system endpoints', () => {
    it('answers /healthz 200 and /readyz 200 ready', async () => {
      const health = await broker.call('GET', '/healthz', null);
      expect(health.status).toBe(200);
      const ready = await broker.call('GET', '/readyz', null);
      expect(ready).toEqual({ status: 200, body: { status: 'ready' } });
    });

    it('exposes Prometheus metrics for active leases and issuance latency', async () => {
      const { token } = await newAgent();
      const task = await declare(token);
      expect(
        (
          await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, token, {
            grant: 'artifacts-read',
          })
        ).status,
      ).toBe(201);

      const response = await fetch(`${broker.url}/metrics`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
      const text = await response.text();
      const active = /^tasklease_active_leases (\d+)$/m.exec(text);
      expect(active).not.toBeNull();
      expect(Number(active?.[1])).toBeGreaterThanOrEqual(1);
      const issued = /^tasklease_issuance_duration_seconds_count\{provider="jwt"\} (\d+)$/m.exec(text);
      expect(issued).not.toBeNull();
      expect(Number(issued?.[1])).toBeGreaterThanOrEqual(1);
    });
  });
});
