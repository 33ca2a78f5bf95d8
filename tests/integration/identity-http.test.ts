import { base64url } from 'jose';
import { createTestIssuer, type TestIssuer } from '../support/fixtures';
import { startTestBroker, type TestBroker } from '../support/broker';

/** Sums a Prometheus counter over the label sets that match `labels` (e.g. `issuer="agents"`). */
const counter = (metricsText: string, name: string, labels = ''): number =>
  metricsText
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .filter((line) => line.includes(labels))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);

describe('identity over HTTP: a refused token stops at the door', () => {
  let broker: TestBroker;
  let stranger: TestIssuer;
  beforeAll(async () => {
    broker = await startTestBroker();
    stranger = await createTestIssuer({ name: 'stranger' });
  });
  afterAll(() => broker.close());

  const now = () => Math.floor(Date.now() / 1000);
  const metrics = async () => (await broker.call('GET', '/metrics', null)).body as string;
  const auditEvents = () => broker.context.deps.audit.query({ limit: 100 });

  /** Raw call with any Authorization header (or none). */
  const declareWith = async (authorization: string | null) => {
    const response = await fetch(`${broker.url}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
      // A declaration the policy would deny (ticket not OPS-*): were the identity check skipped, the policy
      // denial counter and the audit log would show it.
      body: JSON.stringify({ purpose: 'probe', ticket: 'DEV-1' }),
    });
    return { status: response.status, body: (await response.json()) as { error: string; message: string } };
  };

  // [case, Authorization header, whether a token reached the verifier, issuer label of the rejection]
  const cases: [string, () => Promise<string | null>, boolean, string][] = [
    [
      'an expired token',
      async () =>
        `Bearer ${await broker.agents.sign({ sub: 'intruder-expired', iat: now() - 700, exp: now() - 60 })}`,
      true,
      'agents',
    ],
    [
      'a token for another audience',
      async () => `Bearer ${await broker.agents.sign({ sub: 'intruder-aud', aud: 'other-service' })}`,
      true,
      'agents',
    ],
    ['a garbage token', async () => 'Bearer garbage', true, 'unknown'],
    [
      'a token from an unconfigured issuer',
      async () => `Bearer ${await stranger.sign({ sub: 'intruder-stranger' })}`,
      true,
      'unknown',
    ],
    [
      'a token naming agents but signed by corp',
      async () =>
        `Bearer ${await broker.agents.sign({ sub: 'intruder-cross' }, { key: broker.admins.privateKey })}`,
      true,
      'agents',
    ],
    [
      'an unsigned token (alg: none)',
      async () => {
        const claims = {
          iss: broker.agents.iss,
          aud: 'tasklease',
          sub: 'intruder-none',
          iat: now(),
          exp: now() + 300,
        };
        return `Bearer ${base64url.encode(JSON.stringify({ alg: 'none' }))}.${base64url.encode(JSON.stringify(claims))}.`;
      },
      true,
      'agents',
    ],
    ['no Authorization header', async () => null, false, ''],
    [
      'a valid token under the Basic scheme',
      async () => `Basic ${await broker.agents.sign({ sub: 'intruder-basic' })}`,
      false,
      '',
    ],
    [
      'Basic credentials',
      async () => `Basic ${Buffer.from('intruder-basic:password').toString('base64')}`,
      false,
      '',
    ],
    ['an empty Bearer', async () => 'Bearer ', false, ''],
  ];

  /** What the broker tells a refused caller: the same for every case below. */
  let refusal: string;
  beforeAll(async () => {
    refusal = (await declareWith('Bearer garbage')).body.message;
  });

  it.each(cases)(
    '%s: 401 unauthenticated, no policy evaluation, no audit event',
    async (_name, header, verified, issuerLabel) => {
      const authorization = await header();
      const before = { metrics: await metrics(), audit: await auditEvents() };

      const response = await declareWith(authorization);

      expect(response.status).toBe(401);
      expect(response.body).toEqual({ error: 'unauthenticated', message: refusal });

      const after = { metrics: await metrics(), audit: await auditEvents() };
      expect(counter(after.metrics, 'tasklease_policy_denials_total')).toBe(
        counter(before.metrics, 'tasklease_policy_denials_total'),
      );
      expect(after.audit).toEqual(before.audit);
      expect(after.audit.filter((event) => event.subject?.startsWith('intruder'))).toEqual([]);
      if (verified) {
        const label = `issuer="${issuerLabel}"`;
        expect(counter(after.metrics, 'tasklease_identity_rejections_total', label)).toBe(
          counter(before.metrics, 'tasklease_identity_rejections_total', label) + 1,
        );
      }
    },
  );

  it('the one refusal message gives no reason away', () => {
    expect(refusal).toMatch(/\S/);
    expect(refusal).not.toMatch(/aud|exp|alg|issuer|signature|key|basic|header|garbage|malformed/i);
  });

  it('guards every workload and admin route the same way', async () => {
    for (const [method, route] of [
      ['GET', '/v1/tasks/0123456789abcdef0123456789abcdef'],
      ['POST', '/v1/tasks/0123456789abcdef0123456789abcdef/credentials'],
      ['GET', '/v1/leases'],
      ['POST', '/v1/leases/revoke'],
      ['GET', '/v1/audit'],
    ] as const) {
      const response = await broker.call(method, route, 'garbage', method === 'POST' ? {} : undefined);
      expect({ route, status: response.status, error: response.body.error }).toEqual({
        route,
        status: 401,
        error: 'unauthenticated',
      });
    }
  });

  it('a valid token is reusable until it expires: two calls with it both succeed', async () => {
    const token = await broker.agents.sign({ sub: 'reuser' }, { ttlSeconds: 120 });
    const first = await broker.call('POST', '/v1/tasks', token, { purpose: 'first', ticket: 'OPS-1' });
    const second = await broker.call('POST', '/v1/tasks', token, { purpose: 'second', ticket: 'OPS-2' });
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(second.body.taskId).not.toBe(first.body.taskId);
    expect(second.body.identity).toEqual({ issuer: 'agents', subject: 'reuser', kind: 'oidc' });
    const view = await broker.call('GET', `/v1/tasks/${first.body.taskId}`, token);
    expect(view.status).toBe(200);
    const declared = (await auditEvents()).filter(
      (event) => event.subject === 'reuser' && event.type === 'task.declared',
    );
    expect(declared).toHaveLength(2);
  });

  it('a token the policy denies does reach the policy (the counters above can move)', async () => {
    const before = await metrics();
    const token = await broker.agents.sign({ sub: 'denied-one' });
    const response = await declareWith(`Bearer ${token}`);
    expect(response.status).toBe(403);
    expect(response.body.error).toBe('policy_denied');
    const after = await metrics();
    expect(counter(after, 'tasklease_policy_denials_total')).toBe(
      counter(before, 'tasklease_policy_denials_total') + 1,
    );
    expect(
      (await auditEvents()).filter((event) => event.subject === 'denied-one').map((event) => event.type),
    ).toEqual(['task.denied']);
  });

  it('accepts the Bearer scheme in any case (RFC 7235: the scheme is case-insensitive)', async () => {
    const token = await broker.agents.sign({ sub: 'lowercase-client' });
    const response = await fetch(`${broker.url}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `bearer ${token}` },
      body: JSON.stringify({ purpose: 'lowercase scheme', ticket: 'OPS-3' }),
    });
    expect(response.status).toBe(201);
  });
});
