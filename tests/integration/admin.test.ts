import { createHash } from 'node:crypto';
import { startTestBroker, waitFor } from '../support/broker';
import { createTestIssuer } from '../support/fixtures';
import { buildIfStale, runTasklease } from '../support/processes';

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

interface LeaseRow {
  leaseId: string;
  taskId: string;
  grant: string;
  state: string;
  identity: { issuer: string; subject: string };
  revocation?: string;
  revokeReason?: string;
}

/**
 * A broker with a known fleet of leases, so every filter and selector has one exact expected answer:
 *   alpha@agents  task A: artifacts-read ×2, artifacts-write ×1
 *   beta@agents   task B: artifacts-read ×1, artifacts-write ×1
 *   alpha@robots  task C: artifacts-write ×1   (same subject, another issuer)
 */
async function startFleet() {
  const robots = await createTestIssuer({ name: 'robots' });
  const broker = await startTestBroker({ extraIssuers: [robots] });
  const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
  const viewer = await broker.admins.sign({ sub: 'viewer@example.com' });
  const tokens = {
    alpha: await broker.agents.sign({ sub: 'alpha' }),
    beta: await broker.agents.sign({ sub: 'beta' }),
    robotAlpha: await robots.sign({ sub: 'alpha' }),
  };
  const declareWith = async (token: string, grants: string[]) => {
    const task = await broker.call('POST', '/v1/tasks', token, {
      purpose: 'admin test',
      ticket: 'OPS-11',
      ref: 'refs/heads/main',
    });
    expect(task.status).toBe(201);
    const leaseIds: string[] = [];
    const credentials: string[] = [];
    for (const grant of grants) {
      const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, token, { grant });
      expect(issued.status).toBe(201);
      leaseIds.push(issued.body.leaseId);
      credentials.push(issued.body.credential.token);
    }
    return { taskId: task.body.taskId as string, leaseIds, credentials };
  };
  const tasks = {
    A: await declareWith(tokens.alpha, ['artifacts-read', 'artifacts-read', 'artifacts-write']),
    B: await declareWith(tokens.beta, ['artifacts-read', 'artifacts-write']),
    C: await declareWith(tokens.robotAlpha, ['artifacts-write']),
  };
  const list = async (query = ''): Promise<LeaseRow[]> => {
    const response = await broker.call('GET', `/v1/leases${query}`, admin);
    expect(response.status).toBe(200);
    return response.body.leases;
  };
  const idsOf = (rows: LeaseRow[]) => rows.map((row) => row.leaseId).sort();
  /** leaseId → state, for every lease in the fleet. */
  const states = async () => {
    const all = [...(await list('?grant=artifacts-read')), ...(await list('?grant=artifacts-write'))];
    return Object.fromEntries(all.map((row) => [row.leaseId, row.state]));
  };
  const waitSettled = (leaseIds: string[]) =>
    waitFor(async () => {
      const now = await states();
      return leaseIds.every((id) => now[id] === 'revoked');
    }, 5_000);
  return {
    broker,
    robots,
    admin,
    viewer,
    tokens,
    tasks,
    list,
    idsOf,
    states,
    waitSettled,
    allLeaseIds: [...tasks.A.leaseIds, ...tasks.B.leaseIds, ...tasks.C.leaseIds],
  };
}
type Fleet = Awaited<ReturnType<typeof startFleet>>;

const sorted = (ids: string[]) => [...ids].sort();
/** A revocation's id (to follow it: GET /v1/leases/revocations/{id}). */
const ID = expect.stringMatching(/^[0-9a-f]{32}$/);

describe('admin: listing leases', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => fleet.broker.close());

  it('filters by task, identity (with and without issuer), grant and state — exactly the matching leases', async () => {
    const { tasks, list, idsOf } = fleet;
    expect(idsOf(await list(`?task=${tasks.A.taskId}`))).toEqual(sorted(tasks.A.leaseIds));
    expect(idsOf(await list(`?task=${tasks.C.taskId}`))).toEqual(sorted(tasks.C.leaseIds));
    // The identity is a subject: without an issuer, every issuer's "alpha".
    expect(idsOf(await list('?identity=alpha'))).toEqual(sorted([...tasks.A.leaseIds, ...tasks.C.leaseIds]));
    expect(idsOf(await list('?identity=alpha&issuer=agents'))).toEqual(sorted(tasks.A.leaseIds));
    expect(idsOf(await list('?identity=alpha&issuer=robots'))).toEqual(sorted(tasks.C.leaseIds));
    expect(idsOf(await list('?identity=beta'))).toEqual(sorted(tasks.B.leaseIds));
    expect(await list('?identity=nobody')).toEqual([]);
    expect(idsOf(await list('?grant=artifacts-write'))).toEqual(
      sorted([tasks.A.leaseIds[2]!, tasks.B.leaseIds[1]!, tasks.C.leaseIds[0]!]),
    );
    expect(idsOf(await list('?grant=artifacts-read&identity=alpha'))).toEqual(
      sorted(tasks.A.leaseIds.slice(0, 2)),
    );
    expect(idsOf(await list('?state=active'))).toEqual(sorted(fleet.allLeaseIds));
    expect(await list('?state=revoked')).toEqual([]);
  });

  it('shows each lease with its identity and no secret', async () => {
    const [row] = await fleet.list(`?task=${fleet.tasks.C.taskId}`);
    expect(row).toMatchObject({
      taskId: fleet.tasks.C.taskId,
      grant: 'artifacts-write',
      provider: 'jwt',
      state: 'active',
      identity: { issuer: 'robots', subject: 'alpha' },
    });
    const text = JSON.stringify(await fleet.list());
    for (const credential of [
      ...fleet.tasks.A.credentials,
      ...fleet.tasks.B.credentials,
      ...fleet.tasks.C.credentials,
    ]) {
      expect(text).not.toContain(credential);
    }
  });

  it('state=revoked finds a revoked lease and state=active no longer does', async () => {
    const { broker, admin, tasks, list, idsOf, waitSettled } = fleet;
    const target = tasks.B.leaseIds[0]!;
    expect(
      (await broker.call('POST', `/v1/leases/${target}/revoke`, admin, { reason: 'state filter' })).status,
    ).toBe(202);
    await waitSettled([target]);
    expect(idsOf(await list('?state=revoked'))).toEqual([target]);
    expect(idsOf(await list('?state=active'))).toEqual(
      sorted(fleet.allLeaseIds.filter((id) => id !== target)),
    );
    expect(idsOf(await list(`?task=${tasks.B.taskId}&state=active`))).toEqual([tasks.B.leaseIds[1]]);
  });

  it('answers 400 invalid_request to an unknown filter or state, or an issuer without an identity', async () => {
    for (const query of ['?colour=red', '?state=gone', '?task=bad.id', '?issuer=agents']) {
      const response = await fleet.broker.call('GET', `/v1/leases${query}`, fleet.admin);
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_request');
    }
  });
});

describe('admin: who may do what', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => fleet.broker.close());

  it('refuses a workload every admin call with 403 forbidden', async () => {
    const { broker, tokens, tasks } = fleet;
    for (const [method, route, body] of [
      ['GET', '/v1/leases', undefined],
      ['GET', `/v1/audit?task=${tasks.A.taskId}`, undefined],
      ['POST', `/v1/leases/${tasks.A.leaseIds[0]}/revoke`, { reason: 'mine' }],
      ['POST', '/v1/leases/revoke', { selector: { all: true }, reason: 'all of it' }],
    ] as const) {
      const response = await broker.call(method, route, tokens.alpha, body);
      expect({ route, status: response.status, error: response.body.error }).toEqual({
        route,
        status: 403,
        error: 'forbidden',
      });
    }
    expect(await fleet.states()).toEqual(Object.fromEntries(fleet.allLeaseIds.map((id) => [id, 'active'])));
  });

  it('lets a viewer list and read the audit, but not revoke', async () => {
    const { broker, viewer, tasks } = fleet;
    expect((await broker.call('GET', `/v1/leases?task=${tasks.A.taskId}`, viewer)).body.leases).toHaveLength(
      3,
    );
    expect((await broker.call('GET', `/v1/audit?task=${tasks.A.taskId}`, viewer)).status).toBe(200);
    const one = await broker.call('POST', `/v1/leases/${tasks.A.leaseIds[0]}/revoke`, viewer, {
      reason: 'curious',
    });
    expect(one.status).toBe(403);
    expect(one.body.error).toBe('forbidden');
    const bulk = await broker.call('POST', '/v1/leases/revoke', viewer, {
      selector: { task: tasks.A.taskId },
      reason: 'curious',
      dryRun: true,
    });
    expect(bulk.status).toBe(403);
    expect(await fleet.states()).toEqual(Object.fromEntries(fleet.allLeaseIds.map((id) => [id, 'active'])));
  });

  it('answers 401 to an admin call without a token', async () => {
    const response = await fleet.broker.call('GET', '/v1/leases', null);
    expect(response.status).toBe(401);
    expect(response.body.error).toBe('unauthenticated');
  });
});

describe('admin: revoking one lease', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => fleet.broker.close());

  it('answers 202, then the lease is revoked with the reason, and its credential is dead', async () => {
    const { broker, admin, tasks, waitSettled, states } = fleet;
    const target = tasks.A.leaseIds[0]!;
    const response = await broker.call('POST', `/v1/leases/${target}/revoke`, admin, {
      reason: 'leaked in a log',
    });
    expect(response).toEqual({ status: 202, body: { leaseId: target, state: 'revoking', revocationId: ID } });
    await waitSettled([target]);
    const [row] = await fleet.list(`?task=${tasks.A.taskId}&state=revoked`);
    expect(row).toMatchObject({
      leaseId: target,
      revocation: 'jwt-denylisted',
      revokeReason: 'leaked in a log',
    });
    const introspected = await fetch(`${broker.url}/v1/introspect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tasks.A.credentials[0]! }),
    });
    expect(await introspected.json()).toEqual({ active: false });
    // Only that lease.
    const now = await states();
    expect(fleet.allLeaseIds.filter((id) => now[id] !== 'active')).toEqual([target]);

    const again = await broker.call('POST', `/v1/leases/${target}/revoke`, admin, { reason: 'twice' });
    expect(again.status).toBe(409);
    expect(again.body.error).toBe('lease_not_active');
  });

  it('answers 404 to an unknown lease, 400 to a malformed id or a missing reason', async () => {
    const { broker, admin, tasks } = fleet;
    const unknown = await broker.call('POST', '/v1/leases/0123456789abcdef/revoke', admin, { reason: 'x' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toBe('not_found');
    const malformed = await broker.call('POST', '/v1/leases/not.an.id/revoke', admin, { reason: 'x' });
    expect(malformed.status).toBe(400);
    for (const body of [{}, { reason: '' }, { reason: '   ' }]) {
      const response = await broker.call('POST', `/v1/leases/${tasks.B.leaseIds[0]}/revoke`, admin, body);
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_request');
      expect(response.body.message).toContain('reason');
    }
    expect((await fleet.states())[tasks.B.leaseIds[0]!]).toBe('active');
  });
});

describe('admin: bulk revocation', () => {
  let fleet: Fleet;
  beforeEach(async () => {
    fleet = await startFleet();
  });
  afterEach(() => fleet.broker.close());

  const bulk = (body: unknown) => fleet.broker.call('POST', '/v1/leases/revoke', fleet.admin, body);
  /** After a bulk revocation: exactly `revoked` end revoked, every other lease stays active. */
  const expectOnlyRevoked = async (revoked: string[]) => {
    await fleet.waitSettled(revoked);
    const now = await fleet.states();
    expect(now).toEqual(
      Object.fromEntries(fleet.allLeaseIds.map((id) => [id, revoked.includes(id) ? 'revoked' : 'active'])),
    );
  };

  it("by task: counts by grant and provider, revokes that task's leases only", async () => {
    const response = await bulk({ selector: { task: fleet.tasks.A.taskId }, reason: 'task A compromised' });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      matched: 3,
      revoked: 3,
      byGrant: { 'artifacts-read': 2, 'artifacts-write': 1 },
      byProvider: { jwt: 3 },
      dryRun: false,
      force: false,
      revocationId: ID,
    });
    await expectOnlyRevoked(fleet.tasks.A.leaseIds);
    // Settled leases are not matched again.
    expect((await bulk({ selector: { task: fleet.tasks.A.taskId }, reason: 'again' })).body).toMatchObject({
      matched: 0,
      revoked: 0,
    });
  });

  it("by identity: a subject across issuers, or one issuer's only", async () => {
    const oneIssuer = await bulk({
      selector: { identity: 'alpha', issuer: 'robots' },
      reason: 'robot alpha',
    });
    expect(oneIssuer.body).toEqual({
      matched: 1,
      revoked: 1,
      byGrant: { 'artifacts-write': 1 },
      byProvider: { jwt: 1 },
      dryRun: false,
      force: false,
      revocationId: ID,
    });
    await expectOnlyRevoked(fleet.tasks.C.leaseIds);

    const everywhere = await bulk({ selector: { identity: 'alpha' }, reason: 'alpha everywhere' });
    // C is settled already: only A's three remain to revoke.
    expect(everywhere.body).toEqual({
      matched: 3,
      revoked: 3,
      byGrant: { 'artifacts-read': 2, 'artifacts-write': 1 },
      byProvider: { jwt: 3 },
      dryRun: false,
      force: false,
      revocationId: ID,
    });
    await expectOnlyRevoked([...fleet.tasks.A.leaseIds, ...fleet.tasks.C.leaseIds]);
  });

  it('by grant: every lease of that grant, whoever holds it', async () => {
    const response = await bulk({ selector: { grant: 'artifacts-write' }, reason: 'write key rotated' });
    expect(response.body).toEqual({
      matched: 3,
      revoked: 3,
      byGrant: { 'artifacts-write': 3 },
      byProvider: { jwt: 3 },
      dryRun: false,
      force: false,
      revocationId: ID,
    });
    await expectOnlyRevoked([
      fleet.tasks.A.leaseIds[2]!,
      fleet.tasks.B.leaseIds[1]!,
      fleet.tasks.C.leaseIds[0]!,
    ]);
  });

  it('dryRun reports what would be revoked and changes nothing', async () => {
    const response = await bulk({ selector: { grant: 'artifacts-read' }, reason: 'what if', dryRun: true });
    expect(response.body).toEqual({
      matched: 3,
      revoked: 0,
      byGrant: { 'artifacts-read': 3 },
      byProvider: { jwt: 3 },
      dryRun: true,
      force: false,
    });
    // Give a wrongly started revocation time to show.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expectOnlyRevoked([]);
    const audit = await fleet.broker.call('GET', `/v1/audit?task=${fleet.tasks.A.taskId}`, fleet.admin);
    expect(audit.body.events.map((e: { type: string }) => e.type)).not.toContain('lease.revoke_requested');
  });

  it("all: true revokes every unsettled lease of this broker, and no other broker's", async () => {
    const neighbour = await startTestBroker();
    try {
      const agent = await neighbour.agents.sign({ sub: 'alpha' });
      const task = await neighbour.call('POST', '/v1/tasks', agent, {
        purpose: 'neighbour',
        ticket: 'OPS-12',
      });
      const issued = await neighbour.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
        grant: 'artifacts-read',
      });
      expect(issued.status).toBe(201);

      const response = await bulk({ selector: { all: true }, reason: 'incident 42' });
      expect(response.body).toEqual({
        matched: 6,
        revoked: 6,
        byGrant: { 'artifacts-read': 3, 'artifacts-write': 3 },
        byProvider: { jwt: 6 },
        dryRun: false,
        force: false,
        revocationId: ID,
      });
      await expectOnlyRevoked(fleet.allLeaseIds);

      const neighbourAdmin = await neighbour.admins.sign({ sub: 'oncall@example.com' });
      const theirs = await neighbour.call('GET', `/v1/leases?task=${task.body.taskId}`, neighbourAdmin);
      expect(theirs.body.leases.map((l: LeaseRow) => l.state)).toEqual(['active']);
    } finally {
      await neighbour.close();
    }
  });
});

describe('admin: bulk revocation refuses a malformed request', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => fleet.broker.close());

  it.each([
    ['no reason', { selector: { task: 'abc' } }, 'reason'],
    ['a blank reason', { selector: { task: 'abc' }, reason: '  ' }, 'reason'],
    ['an empty selector', { selector: {}, reason: 'x' }, 'selector'],
    [
      'all: true with another field',
      { selector: { all: true, grant: 'artifacts-read' }, reason: 'x' },
      'selector',
    ],
    ['all: false', { selector: { all: false }, reason: 'x' }, 'selector'],
    ['issuer without identity', { selector: { task: 'abc', issuer: 'agents' }, reason: 'x' }, 'issuer'],
    ['no selector', { reason: 'x' }, 'selector'],
    ['an unknown selector field', { selector: { colour: 'red' }, reason: 'x' }, 'colour'],
  ])('answers 400 invalid_request to %s, and revokes nothing', async (_label, body, mention) => {
    const response = await fleet.broker.call('POST', '/v1/leases/revoke', fleet.admin, body);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect(response.body.message).toContain(mention);
    expect(await fleet.states()).toEqual(Object.fromEntries(fleet.allLeaseIds.map((id) => [id, 'active'])));
  });
});

describe('admin: the audit log', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => fleet.broker.close());

  it("returns a task's events oldest first, with hashes and never a token", async () => {
    const { broker, admin, tokens, tasks, waitSettled } = fleet;
    const target = tasks.B.leaseIds[0]!;
    expect(
      (await broker.call('POST', `/v1/leases/${target}/revoke`, admin, { reason: 'audit trail' })).status,
    ).toBe(202);
    await waitSettled([target]);

    const response = await broker.call('GET', `/v1/audit?task=${tasks.B.taskId}`, admin);
    expect(response.status).toBe(200);
    const events = response.body.events as {
      type: string;
      atMs: number;
      lease?: string;
      task?: string;
      tokenSha256?: string;
      credentialSha256?: string;
      actor?: string;
      reason?: string;
    }[];
    expect(events.map((e) => e.type)).toEqual([
      'task.declared',
      'credential.issued',
      'credential.issued',
      'lease.revoke_requested',
      'lease.settled',
    ]);
    expect(events.every((e) => e.task === tasks.B.taskId)).toBe(true);
    const times = events.map((e) => e.atMs);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(events[3]).toMatchObject({
      lease: target,
      actor: 'corp/oncall@example.com',
      reason: 'audit trail',
    });
    expect(events[4]).toMatchObject({ lease: target });

    // Hashes stand in for the secrets; the secrets themselves are nowhere in the log.
    expect(events[0]?.tokenSha256).toBe(sha256Hex(tokens.beta));
    const issuedEvent = events.find((e) => e.lease === target && e.type === 'credential.issued');
    expect(issuedEvent?.credentialSha256).toBe(sha256Hex(tasks.B.credentials[0]!));
    const text = JSON.stringify(response.body);
    for (const secret of [tokens.beta, ...tasks.B.credentials, admin]) expect(text).not.toContain(secret);
    // Not even a JWT-shaped fragment.
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
  });

  it('filters by lease and by identity', async () => {
    const { broker, admin, tasks } = fleet;
    const byLease = await broker.call('GET', `/v1/audit?lease=${tasks.A.leaseIds[1]}`, admin);
    expect(byLease.body.events.map((e: { type: string }) => e.type)).toEqual(['credential.issued']);
    const byIdentity = await broker.call('GET', '/v1/audit?identity=alpha&issuer=robots', admin);
    expect(byIdentity.body.events.map((e: { type: string; task: string }) => [e.type, e.task])).toEqual([
      ['task.declared', tasks.C.taskId],
      ['credential.issued', tasks.C.taskId],
    ]);
  });
});

describe('admin CLI: tasklease lease ls | revoke', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    [fleet] = await Promise.all([startFleet(), buildIfStale()]);
  }, 60_000);
  afterAll(() => fleet.broker.close());

  const cli = (args: string[], token: string) =>
    runTasklease(args, { TASKLEASE_ADDR: fleet.broker.url, TASKLEASE_TOKEN: token });

  it("lease ls --task --json lists that task's leases", async () => {
    const result = await cli(['lease', 'ls', '--task', fleet.tasks.A.taskId, '--json'], fleet.admin);
    expect(result.code).toBe(0);
    const listed = JSON.parse(result.stdout) as { leases: LeaseRow[]; total: number };
    expect(listed.total).toBe(3);
    expect(listed.leases.map((l) => l.leaseId).sort()).toEqual(sorted(fleet.tasks.A.leaseIds));
    expect(listed.leases.every((l) => l.taskId === fleet.tasks.A.taskId && l.state === 'active')).toBe(true);
  });

  it('lease ls prints a table for people', async () => {
    const result = await cli(['lease', 'ls', '--identity', 'alpha', '--issuer', 'robots'], fleet.admin);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^LEASEID\s+STATE\s+GRANT/);
    expect(lines).toHaveLength(3);
    expect(lines[1]).toContain(fleet.tasks.C.leaseIds[0]);
    expect(lines[1]).toContain('robots/alpha');
    expect(lines[2]).toBe('1 lease: 1 active');
  });

  it('lease revoke <id> --reason revokes that lease', async () => {
    const target = fleet.tasks.B.leaseIds[1]!;
    const result = await cli(['lease', 'revoke', target, '--reason', 'cli test'], fleet.admin);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(target);
    await fleet.waitSettled([target]);
    const [row] = await fleet.list(`?task=${fleet.tasks.B.taskId}&state=revoked`);
    expect(row).toMatchObject({ leaseId: target, revokeReason: 'cli test' });
  });

  it('exits 4 with the error code on stderr when the API refuses the caller', async () => {
    const target = fleet.tasks.A.leaseIds[0]!;
    const [refused, listing] = await Promise.all([
      cli(['lease', 'revoke', target, '--reason', 'not allowed'], fleet.tokens.alpha),
      cli(['lease', 'ls', '--json'], fleet.tokens.alpha),
    ]);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('forbidden');
    expect(refused.stdout).toBe('');
    expect(listing.code).toBe(4);
    expect(listing.stderr).toContain('forbidden');
    expect((await fleet.states())[fleet.tasks.A.leaseIds[0]!]).toBe('active');
  });
});
