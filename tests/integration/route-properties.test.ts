import fc from 'fast-check';
import { ERROR_CATALOGUE } from '../../src/domain/errors';
import { listRoutes } from '../../src/http/route-table';
import { startTestBroker, type TestBroker } from '../support/broker';

/** Member names the routes read, so generated bodies reach past "unknown member" into each field's checks. */
const MEMBERS = [
  ...['purpose', 'ticket', 'ref', 'ttlSeconds', 'grants', 'grant', 'scopes', 'reason', 'approvalId'],
  ...['outcome', 'summary', 'selector', 'dryRun', 'force', 'token', 'token_type_hint', 'validDays'],
  ...['grant_type', 'subject_token', 'subject_token_type', 'audience', 'scope', 'resource', 'issuer'],
  ...['subjectPattern', 'owner', 'enrolmentId', 'expiresAt', 'task', 'lease', 'identity', 'state'],
];
const DOCUMENTED = new Set(Object.keys(ERROR_CATALOGUE));

/** Text as a hostile caller sends it: any code point, lone surrogates, controls, and now and then a lot of it. */
const hostileText = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('\ud800', '\u202e', '\u0085', '\u2028', '\0', '../../etc/passwd', '%00', '__proto__'),
  fc.string({ minLength: 300, maxLength: 5000 }),
);
/** A JSON value of any shape, hostile text at its leaves. */
const hostileJson = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    hostileText,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...MEMBERS), hostileText), tie('value'), { maxKeys: 5 }),
  ),
})).value;
/** Percent-encodes the UTF-8 bytes of `text` (a lone surrogate goes as U+FFFD, as a client's encoder sends it). */
const encodeBytes = (text: string) =>
  [...Buffer.from(text, 'utf8')]
    .map((byte) =>
      /[A-Za-z0-9._~-]/.test(String.fromCharCode(byte))
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).padStart(2, '0')}`,
    )
    .join('');
/** A body most routes take as it is: a generated one changes a member or two, to reach each field's checks. */
const VALID_BODIES = [
  { purpose: 'property test', ticket: 'OPS-1', ttlSeconds: 600 },
  { grant: 'artifacts-read', ttlSeconds: 60 },
  { outcome: 'succeeded' },
  { reason: 'property test' },
  { selector: { identity: 'nobody' }, reason: 'property test', dryRun: true },
];
const validBody = fc.constantFrom(...VALID_BODIES);
const nearValidBody = fc
  .tuple(validBody, fc.dictionary(fc.constantFrom(...MEMBERS), hostileJson, { minKeys: 1, maxKeys: 2 }))
  .map(([base, changes]) => ({ ...base, ...changes }));
const memberBody = fc.dictionary(fc.constantFrom(...MEMBERS), hostileJson, { maxKeys: 6 });

/**
 * Every route of the API, fed generated path parameters, queries, bodies (JSON, form, not JSON at all) and
 * headers (content types, tokens valid and not): never a 5xx, never a crash, and every error answer carries
 * one of the documented codes (docs/errors.md). Redis and the issuers are healthy: a 5xx here is a bug.
 */
describe('every route, any input: a documented 4xx or a success, never a 5xx', () => {
  let broker: TestBroker;
  let tokens: Record<'none' | 'agent' | 'admin' | 'viewer' | 'resourceServer', string | null>;
  let taskId: string;

  beforeAll(async () => {
    broker = await startTestBroker({ worker: false, broker: { refusalsPerMinutePerIdentity: 10_000 } });
    tokens = {
      none: null,
      agent: await broker.agents.sign({ sub: 'fuzz-agent' }, { ttlSeconds: 3600 }),
      admin: await broker.admins.sign({ sub: 'oncall@example.com' }, { ttlSeconds: 3600 }),
      viewer: await broker.admins.sign({ sub: 'viewer@example.com' }, { ttlSeconds: 3600 }),
      resourceServer: await broker.admins.sign({ sub: 'artifacts-api' }, { ttlSeconds: 3600 }),
    };
    const task = await broker.call('POST', '/v1/tasks', tokens.agent, { purpose: 'fuzz', ticket: 'OPS-1' });
    taskId = task.body.taskId;
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('holds over thousands of generated requests across all routes', async () => {
    const routes = listRoutes(broker.api.app).map(({ method, path }) => ({ method, path }));
    expect(routes.length).toBeGreaterThan(20);
    const seen = new Map<string, number>();

    const request = fc.record({
      route: fc.constantFrom(...routes),
      // Now and then a method the route does not take.
      method: fc.option(fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS'), { freq: 8 }),
      // A parameter: this test's real task now and then (deeper paths), else anything.
      param: fc.oneof(
        hostileText.map(encodeBytes),
        // Sent as they are: bytes that are not UTF-8, an encoded NUL, an encoded slash.
        fc.constantFrom('%FF', '%ED%A0%80', '%C0%AF', '%00', '..%2F..%2Fetc', '%'),
        fc.constant('0'.repeat(32)),
        fc.constant('task'),
      ),
      query: fc.dictionary(
        fc.oneof(fc.constantFrom(...MEMBERS, 'limit', 'after', 'wait'), hostileText),
        hostileText,
        {
          maxKeys: 4,
        },
      ),
      body: fc.oneof(
        fc.constant(undefined),
        memberBody.map((value) => ({ kind: 'json' as const, value })),
        nearValidBody.map((value) => ({ kind: 'json' as const, value })),
        validBody.map((value) => ({ kind: 'json' as const, value })),
        hostileJson.map((value) => ({ kind: 'json' as const, value })),
        memberBody.map((value) => ({ kind: 'form' as const, value })),
        hostileText.map((value) => ({ kind: 'raw' as const, value })),
      ),
      contentType: fc.oneof(
        { arbitrary: fc.constant('application/json'), weight: 4 },
        fc.constantFrom(
          undefined,
          'application/json; charset=utf-16',
          'application/x-www-form-urlencoded',
          'text/plain',
          'multipart/form-data; boundary=x',
          'application/json, text/plain',
        ),
      ),
      // Mostly a valid token of each kind of caller (to reach past authentication), else anything.
      auth: fc.oneof(
        {
          arbitrary: fc
            .constantFrom('none', 'agent', 'admin', 'viewer', 'resourceServer')
            .map((who) => ({ who })),
          weight: 3,
        },
        fc
          .constantFrom('Bearer ', 'Basic ', 'bearer ', 'Bearer  ', '')
          .chain((scheme) => hostileText.map((value) => ({ raw: `${scheme}${value}` }))),
      ),
    });

    await fc.assert(
      fc.asyncProperty(request, async (input) => {
        const param = input.param === 'task' ? taskId : input.param;
        const path = input.route.path.replace(/:[A-Za-z]+/g, () => param);
        const query = Object.entries(input.query)
          .map(([key, value]) => `${encodeBytes(key)}=${encodeBytes(value)}`)
          .join('&');
        const headers: Record<string, string> = {};
        if (input.contentType) headers['content-type'] = input.contentType;
        const authorization =
          'who' in input.auth
            ? tokens[input.auth.who as keyof typeof tokens] &&
              `Bearer ${tokens[input.auth.who as keyof typeof tokens]}`
            : input.auth.raw.replace(/[^\t\x20-\x7e]/g, '');
        if (authorization) headers.authorization = authorization;
        let body: string | undefined;
        if (input.body?.kind === 'json') body = JSON.stringify(input.body.value);
        else if (input.body?.kind === 'form')
          body = Object.entries(input.body.value)
            .map(
              ([k, v]) => `${encodeBytes(k)}=${encodeBytes(typeof v === 'string' ? v : JSON.stringify(v))}`,
            )
            .join('&');
        else if (input.body?.kind === 'raw') body = input.body.value;
        const method = input.method ?? input.route.method;
        if (method === 'GET' || method === 'HEAD') body = undefined;

        const response = await fetch(`${broker.url}${path}${query ? `?${query}` : ''}`, {
          method,
          headers,
          body,
          signal: AbortSignal.timeout(10_000),
        });
        const text = await response.text();
        const key = `${response.status}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
        const what = `${method} ${path} → ${response.status} ${text.slice(0, 300)}`;
        if (response.status >= 500) throw new Error(`a 5xx: ${what}`);
        if (response.status >= 400) {
          let code: unknown;
          try {
            code = (JSON.parse(text) as { error?: unknown }).error;
          } catch {
            throw new Error(`an error answer that is not JSON: ${what}`);
          }
          if (typeof code !== 'string' || !DOCUMENTED.has(code))
            throw new Error(`an undocumented code: ${what}`);
        }
      }),
      { numRuns: 6_000, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31), verbose: 1 },
    );
    console.info(`${routes.length} routes, answers by status: ${JSON.stringify(Object.fromEntries(seen))}`);
    // The generator reached past the gate: refusals and successes both, on many routes.
    expect([...seen.keys()].filter((status) => status.startsWith('2')).length).toBeGreaterThan(0);
    expect(seen.get('400') ?? 0).toBeGreaterThan(100);
    expect(seen.get('401') ?? 0).toBeGreaterThan(100);
    // Alive after all of it.
    expect((await fetch(`${broker.url}/healthz`)).status).toBe(200);
  }, 300_000);
});
