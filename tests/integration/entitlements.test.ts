import type { StoredAuditEvent } from '../../src/audit/audit-log';
import { runTasklease } from '../support/processes';
import { DEFAULT_POLICIES, startTestBroker, type TestBroker } from '../support/broker';

const DAY_MS = 86_400_000;

/** artifacts-read needs an entitlement; artifacts-write needs none, but its policy reads one. */
const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource) when { context.task.ticket like "OPS-*" };
@id("read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read")
when { principal.issuer == "agents" };
@id("write-for-team-data")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-write")
when { context.entitled && context.entitlement.owner == "team-data" && context.entitlement.expiresInSeconds > 0 };
`;

const GRANTS = {
  'artifacts-read': {
    provider: 'jwt' as const,
    audience: 'https://artifacts.test',
    scopes: ['artifacts:read'],
    maxTtlSeconds: 600,
    entitlement: 'required' as const,
  },
  'artifacts-write': {
    provider: 'jwt' as const,
    audience: 'https://artifacts.test',
    scopes: ['artifacts:write'],
    maxTtlSeconds: 300,
  },
};

describe('entitlements: enrolment and grant approved apart, enforced at issuance', () => {
  let broker: TestBroker;
  /** The broker's clock runs this far ahead of the wall clock (tests move time on instead of sleeping). */
  let offsetMs = 0;
  const now = () => Date.now() + offsetMs;
  let proposer: string;
  let approver: string;

  beforeAll(async () => {
    broker = await startTestBroker({ policies: POLICIES, grants: GRANTS, nowMs: now });
    proposer = await broker.admins.sign({ sub: 'oncall@example.com' });
    approver = await broker.admins.sign({ sub: 'approver@example.com' });
  });
  afterAll(() => broker.close());
  afterEach(() => {
    offsetMs = 0;
  });

  /** A workload token valid on the broker's clock. */
  const workloadToken = (sub: string) => {
    const iat = Math.floor(now() / 1000);
    return broker.agents.sign({ sub, iat, exp: iat + 600 });
  };
  const audit = async (type: string): Promise<StoredAuditEvent[]> =>
    (await broker.context.deps.audit.query({ limit: 100_000 })).filter((event) => event.type === type);

  async function enrol(subjectPattern: string, body: Record<string, unknown> = {}) {
    const proposed = await broker.call('POST', '/v1/enrolments', proposer, {
      issuer: 'agents',
      subjectPattern,
      owner: 'platform',
      purpose: 'the build agents',
      validDays: 30,
      ...body,
    });
    expect(proposed.status).toBe(201);
    return proposed.body;
  }
  async function entitle(enrolmentId: string, grant: string, body: Record<string, unknown> = {}) {
    const proposed = await broker.call('POST', '/v1/entitlements', proposer, {
      enrolmentId,
      grant,
      owner: 'team-data',
      purpose: 'nightly export',
      validDays: 30,
      ...body,
    });
    expect(proposed.status).toBe(201);
    return proposed.body;
  }
  const approve = async (record: { approval: { approvalId: string } }, token = approver) =>
    broker.call('POST', `/v1/approvals/${record.approval.approvalId}/approve`, token, { reason: 'reviewed' });
  /** Enrols `pattern` and entitles it to `grant`, both approved by the approver. */
  async function entitled(pattern: string, grant: string, body: Record<string, unknown> = {}) {
    const enrolment = await enrol(pattern);
    const entitlement = await entitle(enrolment.enrolmentId, grant, body);
    expect((await approve(enrolment)).status).toBe(200);
    expect((await approve(entitlement)).status).toBe(200);
    return { enrolment, entitlement };
  }
  async function issue(sub: string, grant = 'artifacts-read') {
    const token = await workloadToken(sub);
    const task = await broker.call('POST', '/v1/tasks', token, { purpose: 'export', ticket: 'OPS-7' });
    expect(task.status).toBe(201);
    return broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, token, { grant });
  }

  it('proposed, then approved by another approver: the workload is issued; before that, not_entitled (audited)', async () => {
    const enrolment = await enrol('repo:acme/api:*');
    expect(enrolment).toMatchObject({ status: 'pending', approval: { status: 'pending' } });
    const entitlement = await entitle(enrolment.enrolmentId, 'artifacts-read');
    expect(entitlement).toMatchObject({ status: 'pending', enrolment: { status: 'pending' } });

    const refused = await issue('repo:acme/api:ref:refs/heads/main');
    expect(refused).toMatchObject({ status: 403, body: { error: 'not_entitled' } });
    expect(await audit('credential.denied')).toContainEqual(
      expect.objectContaining({
        subject: 'repo:acme/api:ref:refs/heads/main',
        grant: 'artifacts-read',
        reason: 'no active entitlement to the grant',
      }),
    );

    // Approving the entitlement alone is not enough: the app itself is approved apart.
    expect((await approve(entitlement)).status).toBe(200);
    expect(await issue('repo:acme/api:ref:refs/heads/main')).toMatchObject({ status: 403 });
    expect(
      (await broker.call('GET', `/v1/entitlements/${entitlement.entitlementId}`, proposer)).body.status,
    ).toBe('suspended');
    expect((await approve(enrolment)).status).toBe(200);

    const issued = await issue('repo:acme/api:ref:refs/heads/main');
    expect(issued.status).toBe(201);
    expect(await audit('credential.issued')).toContainEqual(
      expect.objectContaining({
        lease: issued.body.leaseId,
        detail: expect.objectContaining({ entitlementId: entitlement.entitlementId }),
      }),
    );
    // The pattern matches whole subjects of its issuer only.
    expect(await issue('repo:acme/api-v2:ref:refs/heads/main')).toMatchObject({ status: 403 });
    expect(await issue('xrepo:acme/api:ref:main')).toMatchObject({ status: 403 });
    const approvals = await audit('approval.approved');
    for (const record of [enrolment, entitlement])
      expect(approvals).toContainEqual(
        expect.objectContaining({
          actor: 'corp/approver@example.com',
          detail: expect.objectContaining({
            approvalId: record.approval.approvalId,
            target: expect.any(String),
          }),
        }),
      );
  });

  it('the proposer cannot approve its own proposal (separation_of_duties, audited); a denial is final', async () => {
    const enrolment = await enrol('self:*');
    const own = await approve(enrolment, proposer);
    expect(own).toMatchObject({ status: 403, body: { error: 'separation_of_duties' } });
    expect(await audit('approval.refused')).toContainEqual(
      expect.objectContaining({
        actor: 'corp/oncall@example.com',
        detail: expect.objectContaining({ target: enrolment.enrolmentId }),
      }),
    );
    const denied = await broker.call(
      'POST',
      `/v1/approvals/${enrolment.approval.approvalId}/deny`,
      approver,
      {
        reason: 'unknown app',
      },
    );
    expect(denied.status).toBe(200);
    const shown = await broker.call('GET', `/v1/enrolments/${enrolment.enrolmentId}`, approver);
    expect(shown.body).toMatchObject({ status: 'denied', approval: { decision: { reason: 'unknown app' } } });
    const onDenied = await broker.call('POST', '/v1/entitlements', proposer, {
      enrolmentId: enrolment.enrolmentId,
      grant: 'artifacts-read',
      owner: 'team-data',
      purpose: 'x',
    });
    expect(onDenied).toMatchObject({ status: 409, body: { error: 'record_not_active' } });
  });

  it('an entitlement whose expiry passes stops issuance at once', async () => {
    await entitled('expiring:*', 'artifacts-read', { validDays: 1 });
    expect((await issue('expiring:job')).status).toBe(201);
    offsetMs = DAY_MS + 60_000;
    expect(await issue('expiring:job')).toMatchObject({ status: 403, body: { error: 'not_entitled' } });
  });

  it('a revoked enrolment disables its entitlements at once; revocations are audited', async () => {
    const { enrolment, entitlement } = await entitled('revoked:*', 'artifacts-read');
    expect((await issue('revoked:job')).status).toBe(201);
    const revoked = await broker.call('POST', `/v1/enrolments/${enrolment.enrolmentId}/revoke`, proposer, {
      reason: 'app retired',
    });
    expect(revoked.body).toMatchObject({ status: 'revoked', revokedBy: 'corp/oncall@example.com' });
    expect(await issue('revoked:job')).toMatchObject({ status: 403, body: { error: 'not_entitled' } });
    const shown = await broker.call('GET', `/v1/entitlements/${entitlement.entitlementId}`, approver);
    expect(shown.body).toMatchObject({ status: 'suspended', enrolment: { status: 'revoked' } });
    const again = await broker.call('POST', `/v1/enrolments/${enrolment.enrolmentId}/revoke`, proposer, {
      reason: 'twice',
    });
    expect(again).toMatchObject({ status: 409, body: { error: 'record_not_active' } });
    expect(await audit('enrolment.revoked')).toContainEqual(
      expect.objectContaining({
        actor: 'corp/oncall@example.com',
        reason: 'app retired',
        detail: expect.objectContaining({ enrolmentId: enrolment.enrolmentId }),
      }),
    );

    const other = await entitled('revoked-grant:*', 'artifacts-read');
    const path = `/v1/entitlements/${other.entitlement.entitlementId}/revoke`;
    // Revoking takes the `revoke` permission (on-call), not `approve`.
    const byApprover = await broker.call('POST', path, approver, { reason: 'no longer needed' });
    expect(byApprover).toMatchObject({ status: 403, body: { error: 'forbidden' } });
    const revoker = await broker.admins.sign({ sub: 'revoker@example.com' });
    const byRevoker = await broker.call('POST', path, revoker, { reason: 'no longer needed' });
    expect(byRevoker.body).toMatchObject({ status: 'revoked', revokedBy: 'corp/revoker@example.com' });
    expect(await issue('revoked-grant:job')).toMatchObject({ status: 403, body: { error: 'not_entitled' } });
    expect(await audit('entitlement.revoked')).toContainEqual(
      expect.objectContaining({ grant: 'artifacts-read', reason: 'no longer needed' }),
    );
  });

  it('Cedar sees the entitlement: a policy reads its owner for a grant that does not require one', async () => {
    expect(await issue('writer:one', 'artifacts-write')).toMatchObject({
      status: 403,
      body: { error: 'policy_denied' },
    });
    await entitled('writer:*', 'artifacts-write');
    expect((await issue('writer:one', 'artifacts-write')).status).toBe(201);
    await entitled('other-writer:*', 'artifacts-write', { owner: 'team-x' });
    expect(await issue('other-writer:one', 'artifacts-write')).toMatchObject({
      status: 403,
      body: { error: 'policy_denied' },
    });
  });

  it('recertify moves the expiry on, by an approver who did not propose it, and is audited', async () => {
    const { entitlement } = await entitled('recert:*', 'artifacts-read', { validDays: 2 });
    const path = `/v1/entitlements/${entitlement.entitlementId}/recertify`;
    const own = await broker.call('POST', path, proposer, { reason: 'mine', validDays: 30 });
    expect(own).toMatchObject({ status: 403, body: { error: 'separation_of_duties' } });
    const tooLong = await broker.call('POST', path, approver, { reason: 'forever', validDays: 365 });
    expect(tooLong).toMatchObject({ status: 400, body: { error: 'invalid_request' } });

    const recertified = await broker.call('POST', path, approver, {
      reason: 'still exporting',
      validDays: 30,
    });
    expect(recertified.status).toBe(200);
    expect(Date.parse(recertified.body.expiresAt)).toBeGreaterThan(Date.now() + 29 * DAY_MS);
    expect(recertified.body).toMatchObject({ status: 'active', recertifiedBy: 'corp/approver@example.com' });
    offsetMs = 3 * DAY_MS;
    expect((await issue('recert:job')).status).toBe(201);
    expect(await audit('entitlement.recertified')).toContainEqual(
      expect.objectContaining({
        actor: 'corp/approver@example.com',
        reason: 'still exporting',
        detail: expect.objectContaining({ entitlementId: entitlement.entitlementId }),
      }),
    );
  });

  it('tasklease entitlements due lists what expires soon for an owner, soonest first, and not the rest', async () => {
    const soon = await entitled('due-soon:*', 'artifacts-read', { validDays: 3, owner: 'team-due' });
    const sooner = await entitled('due-sooner:*', 'artifacts-read', { validDays: 1, owner: 'team-due' });
    const later = await entitled('due-later:*', 'artifacts-read', { validDays: 60, owner: 'team-due' });
    const otherOwner = await entitled('due-other:*', 'artifacts-read', { validDays: 2, owner: 'team-else' });
    const pending = await entitle((await enrol('due-pending:*')).enrolmentId, 'artifacts-read', {
      validDays: 2,
      owner: 'team-due',
    });
    const env = { TASKLEASE_ADDR: broker.url, TASKLEASE_TOKEN: approver };

    const listed = await runTasklease(['entitlements', 'due', '--owner', 'team-due', '--json'], env);
    expect(listed.code).toBe(0);
    const ids = JSON.parse(listed.stdout).entitlements.map((e: { entitlementId: string }) => e.entitlementId);
    expect(ids).toEqual([sooner.entitlement.entitlementId, soon.entitlement.entitlementId]);
    for (const absent of [later.entitlement, otherOwner.entitlement, pending])
      expect(ids).not.toContain(absent.entitlementId);

    const table = await runTasklease(
      ['entitlements', 'due', '--owner', 'team-due', '--within-days', '90'],
      env,
    );
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('due-later:*');
    expect(table.stdout).toContain('3 entitlements to recertify before');
  });
});

describe('entitlements: the hot path of ordinary grants does not look them up', () => {
  /** Issues one artifacts-read credential on `broker`; answers its status and how many lookups it made. */
  async function issueCounting(broker: TestBroker) {
    const store = broker.context.deps.entitlements;
    const unexpiredForGrant = store.unexpiredForGrant;
    let lookups = 0;
    store.unexpiredForGrant = (...args) => {
      lookups += 1;
      return unexpiredForGrant(...args);
    };
    try {
      const token = await broker.agents.sign({ sub: 'alpha' });
      const task = await broker.call('POST', '/v1/tasks', token, { purpose: 'p', ticket: 'OPS-1' });
      const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, token, {
        grant: 'artifacts-read',
      });
      return { status: issued.status, lookups };
    } finally {
      store.unexpiredForGrant = unexpiredForGrant;
    }
  }

  it('a grant without entitlement: required, under policies that never read context.entitled, issues without reading entitlements', async () => {
    const broker = await startTestBroker();
    try {
      expect(await issueCounting(broker)).toEqual({ status: 201, lookups: 0 });
    } finally {
      await broker.close();
    }
  });

  it('a policy that reads context.entitled makes the same grant look its entitlement up (and deny without one)', async () => {
    const broker = await startTestBroker({
      policies: `${DEFAULT_POLICIES}
forbid(principal, action == Action::"issue", resource == Grant::"artifacts-read") unless { context.entitled };`,
    });
    try {
      expect(await issueCounting(broker)).toEqual({ status: 403, lookups: 1 });
    } finally {
      await broker.close();
    }
  });
});
