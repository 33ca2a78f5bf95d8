import { randomUUID } from 'node:crypto';
import type { JWTPayload } from 'jose';
import type { StoredAuditEvent } from '../../src/audit/audit-log';
import { generateBreakGlassToken } from '../../src/identity/break-glass';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { createTestIssuer, platformClaims, type TestIssuer } from '../support/fixtures';
import { runTasklease } from '../support/processes';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource) when { context.task.ticket like "OPS-*" };
@id("deploy")
permit(principal, action == Action::"issue", resource == Grant::"deploy");
@id("build")
permit(principal, action == Action::"issue", resource == Grant::"build");
@id("long-writes-need-a-human")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-write")
when { context.approved || context.ttlSeconds <= 60 };
@id("ci-deploy")
permit(principal, action == Action::"declareTask", resource) when { principal.kind == "github-actions" };
`;

const jwtGrant = (extra: Record<string, unknown> = {}) => ({
  provider: 'jwt' as const,
  audience: 'https://deploy.test',
  scopes: ['deploy'],
  maxTtlSeconds: 600,
  ...extra,
});

const approver = 'approver@example.com';
const oncall = 'oncall@example.com';

/**
 * Step-up approval through the HTTP API, with the real worker: a grant marked `approval: required` (or a
 * policy that permits only with `context.approved`) answers 202; an approver who is not the requester
 * decides; the agent repeats its call with the approval, once.
 */
describe('step-up approvals', () => {
  let broker: TestBroker;
  let github: TestIssuer;
  let agent: string;
  const admin = (subject: string) => broker.admins.sign({ sub: subject });

  beforeAll(async () => {
    github = await createTestIssuer({ name: 'github', kind: 'github-actions' });
    broker = await startTestBroker({
      policies: POLICIES,
      extraIssuers: [github],
      grants: {
        deploy: jwtGrant({ approval: 'required', approverMustNotHold: ['build'] }),
        build: jwtGrant({ audience: 'https://build.test', scopes: ['build'] }),
        'artifacts-write': jwtGrant({ audience: 'https://artifacts.test', scopes: ['artifacts:write'] }),
      },
    });
    agent = await broker.agents.sign({ sub: 'alpha' });
  });
  afterAll(() => broker.close());

  const declare = async (token: string, ticket = 'OPS-7') =>
    (await broker.call('POST', '/v1/tasks', token, { purpose: 'ship the release', ticket })).body
      .taskId as string;
  const ask = (token: string, taskId: string, body: Record<string, unknown>) =>
    broker.call('POST', `/v1/tasks/${taskId}/credentials`, token, body);
  const decide = async (id: string, action: 'approve' | 'deny', subject: string, reason = 'looked at it') =>
    broker.call('POST', `/v1/approvals/${id}/${action}`, await admin(subject), { reason });
  const events = async (type: string): Promise<StoredAuditEvent[]> =>
    (await broker.context.deps.audit.query({ limit: 100_000 })).filter((event) => event.type === type);
  /** Moves an approval's deadline into the past, as if its time had run out. */
  const lapse = async (id: string) => {
    const { redis, keys } = broker.context;
    const pastMs = Date.now() - 1;
    await redis
      .multi()
      .hset(keys.approval(id), 'expiresAtMs', pastMs)
      .zadd(keys.approvalsDue(), pastMs, id)
      .exec();
  };

  it('happy path: 202 with an approval id, an approver approves, the repeated call issues once', async () => {
    const taskId = await declare(agent);
    const asked = await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 300, reason: 'release 1.4' });
    expect(asked).toMatchObject({
      status: 202,
      body: { status: 'pending', grant: 'deploy', ttlSeconds: 300 },
    });
    const { approvalId } = asked.body;

    // Asking again while it is pending answers the same request: the approvers' inbox is not flooded.
    expect((await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 300 })).body.approvalId).toBe(approvalId);
    // The agent reads its own request; nothing is issued yet.
    const polled = await broker.call('GET', `/v1/approvals/${approvalId}`, agent);
    expect(polled).toMatchObject({
      status: 200,
      body: { status: 'pending', requester: { subject: 'alpha' } },
    });
    expect((await broker.call('GET', `/v1/tasks/${taskId}`, agent)).body.leases).toEqual([]);

    // The approver's inbox shows what the credential is for.
    const inbox = await broker.call('GET', '/v1/approvals', await admin(approver));
    const listed = inbox.body.approvals.find((a: { approvalId: string }) => a.approvalId === approvalId);
    expect(listed).toMatchObject({
      kind: 'step-up',
      reason: 'release 1.4',
      task: { taskId, purpose: 'ship the release', ticket: 'OPS-7' },
    });

    const approved = await decide(approvalId, 'approve', approver, 'release window open');
    expect(approved).toMatchObject({
      status: 200,
      body: { status: 'approved', decision: { by: `corp/${approver}`, reason: 'release window open' } },
    });
    const issued = await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 300, approvalId });
    expect(issued).toMatchObject({ status: 201, body: { grant: 'deploy', provider: 'jwt' } });

    const after = await broker.call('GET', `/v1/approvals/${approvalId}`, agent);
    expect(after.body).toMatchObject({ status: 'used', leaseId: issued.body.leaseId });
    // Single use: the same approval never issues twice.
    expect(await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 300, approvalId })).toMatchObject({
      status: 409,
      body: { error: 'approval_used' },
    });
    // Every step is in the audit log: requested, approved (by whom), and the issuance names the approval.
    expect(
      (await events('approval.requested')).find((e) => e.detail?.approvalId === approvalId),
    ).toMatchObject({
      subject: 'alpha',
      task: taskId,
      grant: 'deploy',
      reason: 'release 1.4',
    });
    expect(
      (await events('approval.approved')).find((e) => e.detail?.approvalId === approvalId),
    ).toMatchObject({
      subject: 'alpha',
      actor: `corp/${approver}`,
      reason: 'release window open',
    });
    expect((await events('credential.issued')).find((e) => e.lease === issued.body.leaseId)).toMatchObject({
      detail: { approvalId, approvedBy: `corp/${approver}` },
    });
  });

  it("asking again answers the open request, also when the task's remaining time shortens the TTL", async () => {
    // A task shorter than the grant's maximum: every call clamps the TTL to what remains of the task.
    const taskId = (
      await broker.call('POST', '/v1/tasks', agent, { purpose: 'hotfix', ticket: 'OPS-7', ttlSeconds: 300 })
    ).body.taskId as string;
    const first = await ask(agent, taskId, { grant: 'deploy' });
    expect(first.status).toBe(202);
    // Seconds pass: the task has less time left than when the request was made.
    const { redis, keys } = broker.context;
    const taskExpiresAtMs = Number(await redis.hget(keys.task(taskId), 'expiresAtMs'));
    await redis.hset(keys.task(taskId), 'expiresAtMs', taskExpiresAtMs - 5_000);
    const again = await ask(agent, taskId, { grant: 'deploy' });
    expect(again).toMatchObject({ status: 202, body: { approvalId: first.body.approvalId } });
    expect(await redis.scard(keys.taskApprovals(taskId))).toBe(1);
  });

  it('calls racing to ask for the same credential open one request between them', async () => {
    const taskId = await declare(agent);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => ask(agent, taskId, { grant: 'deploy', ttlSeconds: 300 })),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(20).fill(202));
    expect(new Set(answers.map((answer) => answer.body.approvalId)).size).toBe(1);
    const { redis, keys } = broker.context;
    expect(await redis.scard(keys.taskApprovals(taskId))).toBe(1);
    expect((await events('approval.requested')).filter((event) => event.task === taskId)).toHaveLength(1);
  });

  it('tasklease task show tells who approved which credential, from the sealed audit log', async () => {
    const taskId = await declare(agent);
    const { approvalId } = (await ask(agent, taskId, { grant: 'deploy' })).body;
    await decide(approvalId, 'approve', approver, 'change 812 approved');
    const issued = await ask(agent, taskId, { grant: 'deploy', approvalId });
    const denied = (await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 30 })).body.approvalId;
    await decide(denied, 'deny', oncall, 'one is enough');
    const { redis, keys } = broker.context;
    await waitFor(async () => {
      const [newest] = await redis.xrevrange(keys.audit(), '+', '-', 'COUNT', 1);
      return (await broker.context.deps.audit.newestSeal())?.id === newest?.[0];
    }, 10_000);

    const shown = await runTasklease(['task', 'show', taskId, '--json'], {
      TASKLEASE_ADDR: broker.url,
      TASKLEASE_TOKEN: await admin(oncall),
    });
    expect(shown.code).toBe(0);
    const story = JSON.parse(shown.stdout);
    expect(story.approvals).toEqual([
      expect.objectContaining({
        approvalId,
        grant: 'deploy',
        status: 'used',
        decidedBy: `corp/${approver}`,
        reason: 'change 812 approved',
        lease: issued.body.leaseId,
      }),
      expect.objectContaining({ approvalId: denied, status: 'denied', decidedBy: `corp/${oncall}` }),
    ]);
    expect(story.leases).toEqual([
      expect.objectContaining({ lease: issued.body.leaseId, approvedBy: `corp/${approver}` }),
    ]);
  });

  it('self-approval is refused and audited; another approver may approve', async () => {
    // An approver who declares a task of their own is its requester: they cannot approve it.
    const own = await admin(approver);
    const taskId = await declare(own);
    const { approvalId } = (await ask(own, taskId, { grant: 'deploy' })).body;
    expect(await decide(approvalId, 'approve', approver)).toMatchObject({
      status: 403,
      body: { error: 'separation_of_duties' },
    });
    expect(await decide(approvalId, 'deny', approver)).toMatchObject({ status: 403 });
    expect((await broker.call('GET', `/v1/approvals/${approvalId}`, own)).body.status).toBe('pending');
    expect(
      (await events('approval.refused')).filter((e) => e.detail?.approvalId === approvalId),
    ).toHaveLength(2);

    expect((await decide(approvalId, 'approve', oncall)).body.status).toBe('approved');
    expect((await ask(own, taskId, { grant: 'deploy', approvalId })).status).toBe(201);
  });

  it('stage separation: whoever was issued the producing grant for the ticket cannot approve its release', async () => {
    // The approver built the artefact for OPS-90 with their own identity.
    const builderToken = await admin(approver);
    const buildTask = await declare(builderToken, 'OPS-90');
    expect((await ask(builderToken, buildTask, { grant: 'build' })).status).toBe(201);

    const deployTask = await declare(agent, 'OPS-90');
    const { approvalId } = (await ask(agent, deployTask, { grant: 'deploy' })).body;
    const refused = await decide(approvalId, 'approve', approver);
    expect(refused).toMatchObject({ status: 403, body: { error: 'separation_of_duties' } });
    expect(refused.body.message).toContain('build');
    expect((await decide(approvalId, 'approve', oncall)).body.status).toBe('approved');

    // Another ticket's release is not theirs: they may approve it.
    const otherTask = await declare(agent, 'OPS-91');
    const other = (await ask(agent, otherTask, { grant: 'deploy' })).body.approvalId;
    expect((await decide(other, 'approve', approver)).body.status).toBe('approved');
  });

  it('denial is final, audited, and the agent learns why', async () => {
    const taskId = await declare(agent);
    const { approvalId } = (await ask(agent, taskId, { grant: 'deploy' })).body;
    expect((await decide(approvalId, 'deny', approver, 'no change ticket')).body.status).toBe('denied');
    const refused = await ask(agent, taskId, { grant: 'deploy', approvalId });
    expect(refused).toMatchObject({ status: 403, body: { error: 'approval_denied' } });
    expect(refused.body.message).toContain('no change ticket');
    expect(await decide(approvalId, 'approve', oncall)).toMatchObject({
      status: 409,
      body: { error: 'approval_not_pending' },
    });
    expect((await events('approval.denied')).find((e) => e.detail?.approvalId === approvalId)).toMatchObject({
      actor: `corp/${approver}`,
      reason: 'no change ticket',
    });
  });

  it('an approval is bound to its task, its grant and its TTL', async () => {
    const taskId = await declare(agent);
    const { approvalId } = (await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 120 })).body;
    await decide(approvalId, 'approve', approver);

    const otherTask = await declare(agent);
    const mismatch = { status: 403, body: { error: 'approval_mismatch' } };
    expect(await ask(agent, otherTask, { grant: 'deploy', ttlSeconds: 120, approvalId })).toMatchObject(
      mismatch,
    );
    expect(await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 600, approvalId })).toMatchObject(
      mismatch,
    );
    expect(await ask(agent, taskId, { grant: 'build', approvalId })).toMatchObject(mismatch);
    expect(await ask(agent, taskId, { grant: 'deploy', approvalId: 'no-such-approval' })).toMatchObject(
      mismatch,
    );
    // Another workload cannot read it either.
    const intruder = await broker.agents.sign({ sub: 'mallory' });
    expect((await broker.call('GET', `/v1/approvals/${approvalId}`, intruder)).status).toBe(403);

    // A shorter TTL than approved is within what was approved.
    const issued = await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 60, approvalId });
    expect(issued.status).toBe(201);
  });

  it('two calls racing with one approval get one credential between them', async () => {
    const taskId = await declare(agent);
    const { approvalId } = (await ask(agent, taskId, { grant: 'deploy' })).body;
    await decide(approvalId, 'approve', approver);
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => ask(agent, taskId, { grant: 'deploy', approvalId })),
    );
    const statuses = answers.map((answer) => answer.status).sort();
    expect(statuses).toEqual([201, 409, 409, 409, 409, 409]);
    const leases = (await broker.call('GET', `/v1/tasks/${taskId}`, agent)).body.leases;
    // The losers' credentials were minted, never returned, and revoked at once.
    expect(leases.filter((lease: { state: string }) => lease.state === 'active')).toHaveLength(1);
  });

  it('expiry: an undecided request and an unused approval expire, finally and audited', async () => {
    const taskId = await declare(agent);
    const undecided = (await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 100 })).body.approvalId;
    const unused = (await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 200 })).body.approvalId;
    await decide(unused, 'approve', approver);
    await lapse(undecided);
    await lapse(unused);

    expect(await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 200, approvalId: unused })).toMatchObject({
      status: 403,
      body: { error: 'approval_expired' },
    });
    expect(await decide(undecided, 'approve', approver)).toMatchObject({
      status: 409,
      body: { error: 'approval_not_pending' },
    });
    // The worker's sweeper writes both expiries down, each with its audit event.
    const expired = await waitFor(async () => {
      const found = (await events('approval.expired')).filter((e) =>
        [undecided, unused].includes(String(e.detail?.approvalId)),
      );
      return found.length === 2 && found;
    }, 10_000);
    expect(expired.map((e) => e.reason).sort()).toEqual([
      'approved but not used in time',
      'not decided in time',
    ]);
    expect((await broker.context.deps.approvals.get(unused))?.status).toBe('expired');
    // A new request is a new decision.
    const again = await ask(agent, taskId, { grant: 'deploy', ttlSeconds: 200 });
    expect(again.body.approvalId).not.toBe(unused);
  });

  it('a policy asks for step-up in context: a short write issues at once, a long one waits for a human', async () => {
    const taskId = await declare(agent);
    expect((await ask(agent, taskId, { grant: 'artifacts-write', ttlSeconds: 60 })).status).toBe(201);
    const long = await ask(agent, taskId, { grant: 'artifacts-write', ttlSeconds: 600 });
    expect(long).toMatchObject({ status: 202, body: { status: 'pending' } });
    await decide(long.body.approvalId, 'approve', approver);
    const issued = await ask(agent, taskId, {
      grant: 'artifacts-write',
      ttlSeconds: 600,
      approvalId: long.body.approvalId,
    });
    expect(issued.status).toBe(201);
  });

  it('the agent long-polls its approval and hears the decision when it is made', async () => {
    const taskId = await declare(agent);
    const { approvalId } = (await ask(agent, taskId, { grant: 'deploy' })).body;
    const waiting = broker.call('GET', `/v1/approvals/${approvalId}?waitSeconds=20`, agent);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await decide(approvalId, 'approve', approver);
    expect((await waiting).body).toMatchObject({ approvalId, status: 'approved' });
    expect(await broker.call('GET', `/v1/approvals/${approvalId}?waitSeconds=99`, agent)).toMatchObject({
      status: 400,
      body: { error: 'invalid_request' },
    });
  });

  it('a request for a task that has ended cannot be approved', async () => {
    const taskId = await declare(agent);
    const { approvalId } = (await ask(agent, taskId, { grant: 'deploy' })).body;
    await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'cancelled' });
    expect(await decide(approvalId, 'approve', approver)).toMatchObject({
      status: 409,
      body: { error: 'task_not_open' },
    });
  });

  it('approvals take identity tokens only: a break-glass token is refused', async () => {
    const card = generateBreakGlassToken();
    const response = await broker.call('GET', '/v1/approvals', card.token);
    expect(response).toMatchObject({ status: 401, body: { error: 'unauthenticated' } });
  });

  it('token exchange: authorization_pending with an approval id, then the same exchange with approval_id', async () => {
    const { iss: _iss, aud: _aud, ...claims } = platformClaims('github-actions');
    const ciToken = await github.sign({ ...claims, jti: randomUUID() } as JWTPayload);
    const exchange = async (extra: Record<string, string> = {}) => {
      const response = await fetch(`${broker.url}/v1/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: ciToken,
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          audience: 'deploy',
          ...extra,
        }).toString(),
      });
      return { status: response.status, body: (await response.json()) as any };
    };
    const pending = await exchange();
    expect(pending).toMatchObject({
      status: 400,
      body: { error: 'authorization_pending', approval_status: 'pending' },
    });
    const approvalId = pending.body.approval_id as string;
    // The job polls its approval with its own CI token.
    expect((await broker.call('GET', `/v1/approvals/${approvalId}`, ciToken)).body.status).toBe('pending');
    await decide(approvalId, 'approve', approver);

    const issued = await exchange({ approval_id: approvalId });
    expect(issued).toMatchObject({
      status: 200,
      body: { token_type: 'Bearer', task_id: pending.body.task_id },
    });
    // The subject token is now spent for this grant, and the approval for good.
    expect((await exchange({ approval_id: approvalId })).body.error).toBe('invalid_grant');
  });
});
