import { createHash } from 'node:crypto';
import type { StoredAuditEvent } from '../../src/audit/audit-log';
import { isAdminGate } from '../../src/http/admin-gate';
import { isUnder, listRoutes } from '../../src/http/route-table';
import { ADMIN_PATHS } from '../../src/http/routes/admin';
import { APPROVAL_PATHS } from '../../src/http/routes/approvals';
import { ENTITLEMENT_PATHS } from '../../src/http/routes/entitlements';
import { generateBreakGlassToken } from '../../src/identity/break-glass';
import type { AdminPermission } from '../../src/policy/admin-roles';
import { DEFAULT_POLICIES, startTestBroker, type TestBroker } from '../support/broker';

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');
const sorted = (values: string[]) => [...values].sort();

const emergency = generateBreakGlassToken();
const viewerCard = generateBreakGlassToken();
const oldCard = generateBreakGlassToken();

const CALLERS = [
  'viewer',
  'revoker',
  'approver',
  'admin',
  'workload',
  'break-glass',
  'break-glass viewer',
] as const;
type Caller = (typeof CALLERS)[number];

/** What each caller may do: the roles table of docs/architecture.md. */
const PERMISSIONS: Record<Caller, AdminPermission[]> = {
  viewer: ['view'],
  revoker: ['view', 'revoke'],
  approver: ['view', 'approve'],
  admin: ['view', 'revoke', 'approve'],
  workload: [],
  'break-glass': ['view', 'revoke', 'approve'],
  'break-glass viewer': ['view'],
};

/** Who each caller is in the audit log. */
const WHO: Record<Caller, { issuer: string; subject: string }> = {
  viewer: { issuer: 'corp', subject: 'viewer@example.com' },
  revoker: { issuer: 'corp', subject: 'revoker@example.com' },
  approver: { issuer: 'corp', subject: 'approver@example.com' },
  admin: { issuer: 'corp', subject: 'oncall@example.com' },
  workload: { issuer: 'agents', subject: 'alpha' },
  'break-glass': { issuer: 'break-glass', subject: 'emergency' },
  'break-glass viewer': { issuer: 'break-glass', subject: 'viewer-card' },
};

interface Fleet {
  broker: TestBroker;
  tokens: Record<Caller, string>;
  /** One task with one lease per caller, so each revocation has its own target. */
  taskOf: Record<Caller, string>;
  leaseOf: Record<Caller, string>;
  /** Two pending step-up requests per caller (another workload's), one to approve and one to deny. */
  approvalOf: Record<Caller, { approve: string; deny: string }>;
}

/** A well-formed revocation id that names no revocation. */
const NO_REVOCATION = '0'.repeat(32);

interface AdminRouteRow {
  permission: AdminPermission;
  /** A request the route answers `allowedStatus` to when the caller holds the permission. */
  request(fleet: Fleet, caller: Caller): { path: string; body?: unknown };
  allowedStatus: number;
  /** The caller's input the audit event must record. */
  input(fleet: Fleet, caller: Caller): Record<string, unknown>;
  /** Identity tokens only: a break-glass token is refused (401) before any gate, and nothing is audited. */
  identityOnly?: true;
}

/**
 * One row per admin route of the router, keyed as the router lists it. A new admin route fails the first
 * test until it has a row here, and then is checked against every caller below.
 */
const ADMIN_ROUTES: Record<string, AdminRouteRow> = {
  'GET /v1/leases': {
    permission: 'view',
    request: (f, caller) => ({ path: `/v1/leases?task=${f.taskOf[caller]}` }),
    allowedStatus: 200,
    input: (f, caller) => ({ 'query.task': f.taskOf[caller] }),
  },
  'POST /v1/leases/revoke': {
    permission: 'revoke',
    request: (f, caller) => ({
      path: '/v1/leases/revoke',
      body: { selector: { task: f.taskOf[caller] }, reason: 'roles table', dryRun: true },
    }),
    allowedStatus: 200,
    input: (f, caller) => ({
      'body.selector.task': f.taskOf[caller],
      'body.reason': 'roles table',
      'body.dryRun': true,
    }),
  },
  'POST /v1/leases/:leaseId/revoke': {
    permission: 'revoke',
    request: (f, caller) => ({
      path: `/v1/leases/${f.leaseOf[caller]}/revoke`,
      body: { reason: 'roles table' },
    }),
    allowedStatus: 202,
    input: (f, caller) => ({ 'params.leaseId': f.leaseOf[caller], 'body.reason': 'roles table' }),
  },
  'GET /v1/leases/revocations/:revocationId': {
    permission: 'view',
    request: () => ({ path: `/v1/leases/revocations/${NO_REVOCATION}` }),
    // The route runs, and answers for its own reason: no revocation has that id.
    allowedStatus: 404,
    input: () => ({ 'params.revocationId': NO_REVOCATION }),
  },
  'POST /v1/leases/retry': {
    permission: 'revoke',
    request: () => ({ path: '/v1/leases/retry', body: { reason: 'backend is back' } }),
    allowedStatus: 202,
    input: () => ({ 'body.reason': 'backend is back' }),
  },
  'POST /v1/leases/:leaseId/retry': {
    permission: 'revoke',
    request: (f, caller) => ({
      path: `/v1/leases/${f.leaseOf[caller]}/retry`,
      body: { reason: 'backend is back' },
    }),
    // The route runs, and refuses for its own reason: the lease is not irrevocable.
    allowedStatus: 409,
    input: (f, caller) => ({ 'params.leaseId': f.leaseOf[caller], 'body.reason': 'backend is back' }),
  },
  'GET /v1/audit': {
    permission: 'view',
    request: (f, caller) => ({ path: `/v1/audit?task=${f.taskOf[caller]}&limit=10` }),
    allowedStatus: 200,
    input: (f, caller) => ({ 'query.task': f.taskOf[caller], 'query.limit': '10' }),
  },
  'GET /v1/audit/export': {
    permission: 'view',
    request: (f, caller) => ({ path: `/v1/audit/export?task=${f.taskOf[caller]}&limit=10` }),
    allowedStatus: 200,
    input: (f, caller) => ({ 'query.task': f.taskOf[caller], 'query.limit': '10' }),
  },
  'GET /v1/audit/seals': {
    permission: 'view',
    request: () => ({ path: '/v1/audit/seals?limit=5' }),
    allowedStatus: 200,
    input: () => ({ 'query.limit': '5' }),
  },
  'GET /v1/approvals': {
    permission: 'view',
    request: () => ({ path: '/v1/approvals?status=all&limit=5' }),
    allowedStatus: 200,
    input: () => ({ 'query.status': 'all', 'query.limit': '5' }),
    identityOnly: true,
  },
  'GET /v1/approvals/:approvalId': {
    permission: 'view',
    request: (f, caller) => ({ path: `/v1/approvals/${f.approvalOf[caller].approve}` }),
    allowedStatus: 200,
    input: (f, caller) => ({ 'params.approvalId': f.approvalOf[caller].approve }),
    identityOnly: true,
  },
  'POST /v1/approvals/:approvalId/approve': {
    permission: 'approve',
    request: (f, caller) => ({
      path: `/v1/approvals/${f.approvalOf[caller].approve}/approve`,
      body: { reason: 'roles table' },
    }),
    allowedStatus: 200,
    input: (f, caller) => ({
      'params.approvalId': f.approvalOf[caller].approve,
      'body.reason': 'roles table',
    }),
    identityOnly: true,
  },
  'POST /v1/approvals/:approvalId/deny': {
    permission: 'approve',
    request: (f, caller) => ({
      path: `/v1/approvals/${f.approvalOf[caller].deny}/deny`,
      body: { reason: 'roles table' },
    }),
    allowedStatus: 200,
    input: (f, caller) => ({ 'params.approvalId': f.approvalOf[caller].deny, 'body.reason': 'roles table' }),
    identityOnly: true,
  },
};

/** A well-formed record id that names no enrolment or entitlement. */
const NO_RECORD = 'f'.repeat(32);
const recordProposal = (caller: Caller) => ({
  issuer: 'agents',
  subjectPattern: `roles:${caller}:*`,
  owner: 'team-roles',
  purpose: 'roles table',
  validDays: 7,
});

/** Enrolments and entitlements (identity tokens only: a break-glass caller is refused before the gate). */
const ENTITLEMENT_ROUTES: Record<string, Omit<AdminRouteRow, 'identityOnly'>> = {
  'POST /v1/enrolments': {
    permission: 'approve',
    request: (_f, caller) => ({ path: '/v1/enrolments', body: recordProposal(caller) }),
    allowedStatus: 201,
    input: (_f, caller) => ({
      'body.issuer': 'agents',
      'body.subjectPattern': `roles:${caller}:*`,
      'body.owner': 'team-roles',
      'body.validDays': 7,
    }),
  },
  'GET /v1/enrolments': {
    permission: 'view',
    request: () => ({ path: '/v1/enrolments?owner=team-roles' }),
    allowedStatus: 200,
    input: () => ({ 'query.owner': 'team-roles' }),
  },
  'GET /v1/enrolments/:enrolmentId': {
    permission: 'view',
    request: () => ({ path: `/v1/enrolments/${NO_RECORD}` }),
    allowedStatus: 404,
    input: () => ({ 'params.enrolmentId': NO_RECORD }),
  },
  'POST /v1/enrolments/:enrolmentId/revoke': {
    permission: 'revoke',
    request: () => ({ path: `/v1/enrolments/${NO_RECORD}/revoke`, body: { reason: 'roles table' } }),
    allowedStatus: 404,
    input: () => ({ 'params.enrolmentId': NO_RECORD, 'body.reason': 'roles table' }),
  },
  'POST /v1/entitlements': {
    permission: 'approve',
    request: () => ({
      path: '/v1/entitlements',
      body: { enrolmentId: NO_RECORD, grant: 'artifacts-read', owner: 'team-roles', purpose: 'roles table' },
    }),
    // The route runs, and answers for its own reason: no enrolment has that id.
    allowedStatus: 404,
    input: () => ({ 'body.enrolmentId': NO_RECORD, 'body.grant': 'artifacts-read' }),
  },
  'GET /v1/entitlements': {
    permission: 'view',
    request: () => ({ path: '/v1/entitlements?due=true&owner=team-roles' }),
    allowedStatus: 200,
    input: () => ({ 'query.due': 'true', 'query.owner': 'team-roles' }),
  },
  'GET /v1/entitlements/:entitlementId': {
    permission: 'view',
    request: () => ({ path: `/v1/entitlements/${NO_RECORD}` }),
    allowedStatus: 404,
    input: () => ({ 'params.entitlementId': NO_RECORD }),
  },
  'POST /v1/entitlements/:entitlementId/revoke': {
    permission: 'revoke',
    request: () => ({ path: `/v1/entitlements/${NO_RECORD}/revoke`, body: { reason: 'roles table' } }),
    allowedStatus: 404,
    input: () => ({ 'params.entitlementId': NO_RECORD, 'body.reason': 'roles table' }),
  },
  'POST /v1/entitlements/:entitlementId/recertify': {
    permission: 'approve',
    request: () => ({
      path: `/v1/entitlements/${NO_RECORD}/recertify`,
      body: { reason: 'roles table', validDays: 30 },
    }),
    allowedStatus: 404,
    input: () => ({ 'params.entitlementId': NO_RECORD, 'body.reason': 'roles table', 'body.validDays': 30 }),
  },
};
for (const [route, row] of Object.entries(ENTITLEMENT_ROUTES))
  ADMIN_ROUTES[route] = { ...row, identityOnly: true };

/** Every other route, and who calls it. A new route of any kind must be listed here or above. */
const OTHER_ROUTES: Record<string, string> = {
  'POST /v1/tasks': 'workload',
  'POST /v1/tasks/:taskId/credentials': 'workload',
  'POST /v1/tasks/:taskId/complete': 'workload',
  'GET /v1/tasks/:taskId': 'workload',
  'POST /v1/token': 'CI job (RFC 8693 token exchange)',
  'POST /v1/introspect': 'resource server, or an admin holding view (RFC 7662)',
  'POST /v1/revoke': "the credential's holder (RFC 7009)",
  'GET /.well-known/jwks.json': 'anyone',
  'GET /healthz': 'anyone',
  'GET /readyz': 'anyone',
  'GET /metrics': 'anyone',
};

async function startFleet(): Promise<Fleet> {
  const broker = await startTestBroker({
    policies: `${DEFAULT_POLICIES}
permit(principal, action == Action::"issue", resource == Grant::"deploy");`,
    grants: {
      'artifacts-read': {
        provider: 'jwt',
        audience: 'https://artifacts.test',
        scopes: ['artifacts:read'],
        maxTtlSeconds: 600,
      },
      deploy: { provider: 'jwt', audience: 'https://deploy.test', maxTtlSeconds: 600, approval: 'required' },
    },
    breakGlass: [
      { name: 'emergency', tokenSha256: emergency.tokenSha256 },
      { name: 'viewer-card', tokenSha256: viewerCard.tokenSha256, roles: ['viewer'] },
      { name: 'old-card', tokenSha256: oldCard.tokenSha256, expiresAt: '2020-01-01T00:00:00Z' },
    ],
  });
  const workload = await broker.agents.sign({ sub: 'alpha' });
  const tokens: Record<Caller, string> = {
    viewer: await broker.admins.sign({ sub: 'viewer@example.com' }),
    revoker: await broker.admins.sign({ sub: 'revoker@example.com' }),
    approver: await broker.admins.sign({ sub: 'approver@example.com' }),
    admin: await broker.admins.sign({ sub: 'oncall@example.com' }),
    workload,
    'break-glass': emergency.token,
    'break-glass viewer': viewerCard.token,
  };
  const taskOf = {} as Record<Caller, string>;
  const leaseOf = {} as Record<Caller, string>;
  const approvalOf = {} as Record<Caller, { approve: string; deny: string }>;
  // Another workload's requests: `workload` (alpha) is not their requester, so it reads them as anyone would.
  const requester = await broker.agents.sign({ sub: 'beta' });
  const stepUp = async (taskId: string, ttlSeconds: number) => {
    const asked = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, requester, {
      grant: 'deploy',
      ttlSeconds,
    });
    expect(asked.status).toBe(202);
    return asked.body.approvalId as string;
  };
  for (const caller of CALLERS) {
    const task = await broker.call('POST', '/v1/tasks', workload, {
      purpose: `for ${caller}`,
      ticket: 'OPS-6',
    });
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, workload, {
      grant: 'artifacts-read',
    });
    expect(issued.status).toBe(201);
    taskOf[caller] = task.body.taskId;
    leaseOf[caller] = issued.body.leaseId;
    const betaTask = await broker.call('POST', '/v1/tasks', requester, { purpose: caller, ticket: 'OPS-7' });
    approvalOf[caller] = {
      approve: await stepUp(betaTask.body.taskId, 100),
      deny: await stepUp(betaTask.body.taskId, 200),
    };
  }
  return { broker, tokens, taskOf, leaseOf, approvalOf };
}

describe('admin routes: every route is in the roles table', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker();
  });
  afterAll(() => broker.close());

  it("the router's admin routes are exactly the table's rows, and every other route is listed as not admin", () => {
    const routes = listRoutes(broker.api.app);
    const key = (route: { method: string; path: string }) => `${route.method} ${route.path}`;
    const gated = routes.filter((route) => route.handlers[0] && isAdminGate(route.handlers[0]));
    expect(sorted(gated.map(key))).toEqual(sorted(Object.keys(ADMIN_ROUTES)));
    expect(sorted(routes.filter((route) => !gated.includes(route)).map(key))).toEqual(
      sorted(Object.keys(OTHER_ROUTES)),
    );
    // Admin routes live under the admin paths (break-glass accepted) or the approval paths (identity tokens
    // only); nothing else does.
    for (const route of routes) {
      const under = (paths: readonly string[]) => paths.some((prefix) => isUnder(route.path, prefix));
      const identityOnlyPaths = [...APPROVAL_PATHS, ...ENTITLEMENT_PATHS];
      expect({ route: key(route), admin: under([...ADMIN_PATHS, ...identityOnlyPaths]) }).toEqual({
        route: key(route),
        admin: gated.includes(route),
      });
      expect({ route: key(route), identityOnly: under(identityOnlyPaths) }).toEqual({
        route: key(route),
        identityOnly: Boolean(ADMIN_ROUTES[key(route)]?.identityOnly),
      });
    }
  });
});

describe('admin routes: roles enforced and audited on every call', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => fleet.broker.close());

  const adminCalls = async (who?: { issuer: string; subject: string }): Promise<StoredAuditEvent[]> =>
    (await fleet.broker.context.deps.audit.query({ ...who, limit: 100_000 })).filter(
      (e) => e.type === 'admin.call',
    );

  const cases = Object.keys(ADMIN_ROUTES).flatMap((route) =>
    CALLERS.map((caller) => [route, caller] as const),
  );

  it.each(cases)(
    '%s as %s: allowed only with the permission, and audited either way',
    async (route, caller) => {
      const row = ADMIN_ROUTES[route]!;
      const [method] = route.split(' ') as [string];
      const allowed = PERMISSIONS[caller].includes(row.permission);
      const before = await adminCalls(WHO[caller]);
      const { path, body } = row.request(fleet, caller);

      const response = await fleet.broker.call(method, path, fleet.tokens[caller], body);

      if (row.identityOnly && caller.startsWith('break-glass')) {
        expect(response).toMatchObject({ status: 401, body: { error: 'unauthenticated' } });
        expect(await adminCalls(WHO[caller])).toHaveLength(before.length);
        return;
      }
      if (allowed) {
        expect(response.status).toBe(row.allowedStatus);
      } else {
        expect(response).toMatchObject({ status: 403, body: { error: 'forbidden' } });
        expect(response.body.message).toContain(row.permission);
      }
      const after = await adminCalls(WHO[caller]);
      expect(after).toHaveLength(before.length + 1);
      const event = after[after.length - 1]!;
      expect(event).toMatchObject({
        ...WHO[caller],
        actor: `${WHO[caller].issuer}/${WHO[caller].subject}`,
        detail: {
          method,
          route: route.slice(method.length + 1),
          permission: row.permission,
          outcome: allowed ? 'allowed' : 'forbidden',
          breakGlass: caller.startsWith('break-glass'),
          // What an admin asked for is recorded; what a caller without the role sent is not kept.
          ...(allowed ? row.input(fleet, caller) : {}),
        },
      });
      if (!allowed)
        expect(Object.keys(event.detail ?? {}).sort()).toEqual(
          ['breakGlass', 'method', 'outcome', 'permission', 'route'].sort(),
        );
      const text = JSON.stringify(event);
      expect(text).not.toContain(fleet.tokens[caller]);
      for (const card of [emergency, viewerCard]) expect(text).not.toContain(card.tokenSha256);
      // A JWT caller's event ties the call to its token by hash; a break-glass call records no hash at all.
      expect(event.tokenSha256).toBe(
        caller.startsWith('break-glass') ? undefined : sha256Hex(fleet.tokens[caller]),
      );
    },
  );

  it('a forbidden revocation changes nothing; an allowed one revokes', async () => {
    const { broker, leaseOf } = fleet;
    const state = async (caller: Caller) => (await broker.context.deps.leases.get(leaseOf[caller]))?.state;
    for (const caller of ['viewer', 'approver', 'workload', 'break-glass viewer'] as const)
      expect(await state(caller)).toBe('active');
    for (const caller of ['revoker', 'admin', 'break-glass'] as const)
      expect(['revoking', 'revoked']).toContain(await state(caller));
  });

  it('fails closed: when the audit event cannot be written, the call fails and revokes nothing', async () => {
    const { broker, tokens, leaseOf } = fleet;
    const audit = broker.context.deps.audit;
    const append = audit.append;
    audit.append = () => Promise.reject(new Error('Connection is closed.'));
    try {
      const response = await broker.call('POST', `/v1/leases/${leaseOf.viewer}/revoke`, tokens.admin, {
        reason: 'audit down',
      });
      expect(response).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    } finally {
      audit.append = append;
    }
    expect((await broker.context.deps.leases.get(leaseOf.viewer))?.state).toBe('active');
  });

  const refusedTokens: [string, () => string | null][] = [
    ['no token', () => null],
    ['a garbage token', () => 'garbage'],
    ['an unknown break-glass token', () => generateBreakGlassToken().token],
    ['an expired break-glass token', () => oldCard.token],
    ['a break-glass token one character short', () => emergency.token.slice(0, -1)],
  ];

  it.each(refusedTokens)('%s: 401 on every admin route, and nothing audited', async (_label, token) => {
    const before = (await adminCalls()).length;
    for (const [route, row] of Object.entries(ADMIN_ROUTES)) {
      const [method] = route.split(' ') as [string];
      const { path, body } = row.request(fleet, 'admin');
      const response = await fleet.broker.call(method, path, token(), body);
      expect({ route, ...response }).toEqual({
        route,
        status: 401,
        body: { error: 'unauthenticated', message: 'identity token rejected' },
      });
    }
    expect(await adminCalls()).toHaveLength(before);
  });
});
