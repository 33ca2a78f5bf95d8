import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { generateBreakGlassToken } from '../../src/identity/break-glass';
import { startTestBroker, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';
import { buildIfStale, runTasklease } from '../support/processes';

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

const emergency = generateBreakGlassToken();
const oldCard = generateBreakGlassToken();
const stranger = generateBreakGlassToken();

describe('break-glass tokens over HTTP', () => {
  let broker: TestBroker;
  let workload: string;
  const logLines: string[] = [];
  beforeAll(async () => {
    broker = await startTestBroker({
      breakGlass: [
        { name: 'emergency', tokenSha256: emergency.tokenSha256 },
        { name: 'old-card', tokenSha256: oldCard.tokenSha256, expiresAt: '2020-01-01T00:00:00Z' },
      ],
      logDestination: { write: (line) => void logLines.push(line) },
    });
    workload = await broker.agents.sign({ sub: 'alpha' });
  });
  afterAll(() => broker.close());

  const logRecords = () => logLines.map((line) => JSON.parse(line) as Record<string, unknown>);

  it('opens every admin route without any identity provider, and names the entry as the actor', async () => {
    const task = await broker.call('POST', '/v1/tasks', workload, { purpose: 'incident', ticket: 'OPS-7' });
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, workload, {
      grant: 'artifacts-read',
    });
    const listed = await broker.call('GET', `/v1/leases?task=${task.body.taskId}`, emergency.token);
    expect(listed.status).toBe(200);
    expect(listed.body.leases.map((l: { leaseId: string }) => l.leaseId)).toEqual([issued.body.leaseId]);

    const revoked = await broker.call('POST', `/v1/leases/${issued.body.leaseId}/revoke`, emergency.token, {
      reason: 'idp down, key leaked',
    });
    expect(revoked.status).toBe(202);
    const audit = await broker.call('GET', `/v1/audit?lease=${issued.body.leaseId}`, emergency.token);
    expect(
      audit.body.events.find((e: { type: string }) => e.type === 'lease.revoke_requested'),
    ).toMatchObject({
      actor: 'break-glass/emergency',
      reason: 'idp down, key leaked',
    });
    const calls = await broker.call(
      'GET',
      '/v1/audit?issuer=break-glass&identity=emergency',
      emergency.token,
    );
    expect(calls.body.events.map((e: { type: string; detail: { route: string } }) => e.detail.route)).toEqual(
      ['/v1/leases', '/v1/leases/:leaseId/revoke', '/v1/audit', '/v1/audit'],
    );

    // One warning per use, naming the entry and the route.
    const uses = logRecords().filter((r) => r.msg === 'break-glass token used');
    expect(uses.map((r) => [r.level, r.breakGlass, r.method, r.path])).toEqual([
      [40, 'emergency', 'GET', '/v1/leases'],
      [40, 'emergency', 'POST', `/v1/leases/${issued.body.leaseId}/revoke`],
      [40, 'emergency', 'GET', '/v1/audit'],
      [40, 'emergency', 'GET', '/v1/audit'],
    ]);
  });

  it('is refused on workload routes exactly like a bad token, and nothing is declared', async () => {
    const task = await broker.call('POST', '/v1/tasks', workload, {
      purpose: 'probe target',
      ticket: 'OPS-8',
    });
    const routes: [string, string, unknown][] = [
      ['POST', '/v1/tasks', { purpose: 'as break-glass', ticket: 'OPS-9' }],
      ['GET', `/v1/tasks/${task.body.taskId}`, undefined],
      ['POST', `/v1/tasks/${task.body.taskId}/credentials`, { grant: 'artifacts-read' }],
      ['POST', `/v1/tasks/${task.body.taskId}/complete`, { outcome: 'cancelled' }],
      ['POST', '/v1/introspect', { token: 'anything' }],
    ];
    for (const [method, route, body] of routes) {
      const asGarbage = await broker.call(method, route, 'garbage', body);
      const asBreakGlass = await broker.call(method, route, emergency.token, body);
      expect({ route, ...asBreakGlass }).toEqual({ route, ...asGarbage });
      expect(asBreakGlass.status).toBe(401);
    }

    // Token exchange: a break-glass token as the subject token is just an invalid grant.
    const exchange = (subjectToken: string) =>
      fetch(`${broker.url}/v1/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: TOKEN_EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: JWT_TYPE,
          audience: 'artifacts-read',
        }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const [garbage, breakGlass] = [await exchange('garbage'), await exchange(emergency.token)];
    expect(breakGlass).toEqual(garbage);
    expect(breakGlass.status).toBe(400);

    const events = await broker.context.deps.audit.query({ issuer: 'break-glass', limit: 1000 });
    expect(events.filter((e) => e.type !== 'admin.call')).toEqual([]);
  });

  it('refuses an unknown or expired token with the generic 401, and logs why', async () => {
    for (const token of [stranger.token, oldCard.token]) {
      expect(await broker.call('GET', '/v1/leases', token)).toEqual({
        status: 401,
        body: { error: 'unauthenticated', message: 'identity token rejected' },
      });
    }
    const rejected = logRecords().filter((r) => r.msg === 'break-glass token rejected');
    expect(rejected.map((r) => [r.level, r.reason, r.breakGlass])).toEqual(
      expect.arrayContaining([
        [40, 'unknown break-glass token', undefined],
        [40, 'expired break-glass token', 'old-card'],
      ]),
    );
  });

  it('never writes a break-glass token or its hash to the log', () => {
    // Runs after the tests above: every path a token took (admin, workload, exchange, refused) has logged.
    expect(logLines.length).toBeGreaterThan(10);
    const text = logLines.join('\n');
    for (const card of [emergency, oldCard, stranger]) {
      expect(text).not.toContain(card.token);
      expect(text).not.toContain(card.token.slice(5));
      expect(text).not.toContain(card.tokenSha256);
    }
    expect(text).not.toContain('tlbg_');
  });
});

describe('break-glass callers are rate limited like anyone', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker({
      breakGlass: [{ name: 'emergency', tokenSha256: emergency.tokenSha256 }],
      broker: { requestsPerMinutePerIdentity: 3 },
    });
  });
  afterAll(() => broker.close());

  it('answers 429 past the per-minute allowance of the entry, while an admin keeps their own', async () => {
    const statuses = [];
    for (let i = 0; i < 4; i += 1)
      statuses.push((await broker.call('GET', '/v1/leases', emergency.token)).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    expect((await broker.call('GET', '/v1/leases', admin)).status).toBe(200);
  });
});

describe('tasklease admin break-glass generate', () => {
  beforeAll(() => buildIfStale(), 60_000);

  it('prints a token once, on stdout, with the config entry holding its SHA-256 and a warning on stderr', async () => {
    const result = await runTasklease(
      [
        'admin',
        'break-glass',
        'generate',
        '--name',
        'night-shift',
        '--roles',
        'viewer,revoker',
        '--expires-at',
        '2030-01-31',
      ],
      {},
    );
    expect(result.code).toBe(0);
    const [token, blank, ...rest] = result.stdout.split('\n');
    expect(token).toMatch(/^tlbg_[A-Za-z0-9_-]{43}$/);
    expect(blank).toBe('');
    const { breakGlass } = YAML.parse(rest.join('\n')) as { breakGlass: Record<string, unknown>[] };
    expect(breakGlass).toEqual([
      {
        name: 'night-shift',
        tokenSha256: sha256Hex(token!),
        roles: ['viewer', 'revoker'],
        expiresAt: '2030-01-31T00:00:00.000Z',
      },
    ]);
    expect(result.stderr).toMatch(/shown once/);
    expect(result.stderr).toMatch(/offline/);
    expect(result.stderr).not.toContain(token);
  });

  it('--json gives {token, entry}; the entry configures a broker that accepts the token with its roles', async () => {
    const result = await runTasklease(
      ['admin', 'break-glass', 'generate', '--name', 'viewer-card', '--roles', 'viewer', '--json'],
      {},
    );
    expect(result.code).toBe(0);
    const { token, entry } = JSON.parse(result.stdout) as { token: string; entry: { tokenSha256: string } };
    expect(entry).toEqual({ name: 'viewer-card', tokenSha256: sha256Hex(token), roles: ['viewer'] });

    const broker = await startTestBroker({ breakGlass: [entry as never] });
    try {
      expect((await broker.call('GET', '/v1/leases', token)).status).toBe(200);
      expect(
        (await broker.call('POST', '/v1/leases/revoke', token, { selector: { all: true }, reason: 'x' }))
          .status,
      ).toBe(403);
      // `config check` accepts the file; with the token pasted in place of its hash, it refuses it unechoed.
      expect((await runTasklease(['config', 'check', broker.configFile], {})).code).toBe(0);
      const pasted = path.join(tempDir('bg-config'), 'tasklease.json');
      const input = JSON.parse(readFileSync(broker.configFile, 'utf8')) as Record<string, unknown>;
      writeFileSync(
        pasted,
        JSON.stringify({ ...input, breakGlass: [{ name: 'viewer-card', tokenSha256: token }] }),
      );
      const refused = await runTasklease(['config', 'check', pasted], {});
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('breakGlass.0.tokenSha256: this is the token itself');
      expect(refused.stdout + refused.stderr).not.toContain(token);
    } finally {
      await broker.close();
    }
  });

  it('refuses an unknown role or a bad date with exit 1, printing no token', async () => {
    for (const args of [
      ['--roles', 'root'],
      ['--expires-at', 'soon'],
      ['--name', 'Bad Name'],
    ]) {
      const result = await runTasklease(['admin', 'break-glass', 'generate', ...args], {});
      expect(result.code).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/^tasklease: --(roles|expires-at|name)/);
    }
  });
});
