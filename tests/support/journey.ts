import { randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import { waitFor, type TestBroker, type TestBrokerOptions } from './broker';
import { createTestIssuer, platformClaims, type TestIssuer } from './fixtures';
import { runTasklease } from './processes';

/**
 * The whole journey of the product, run the same way against each Redis topology: declare, issue, expiry
 * settled by the worker, completion revoking, a bulk revocation followed with `--wait`, a step-up approval,
 * a token exchange, a rate-limit 429, and `audit verify` passing.
 */
export const JOURNEY_POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");
@id("deploy-approved")
permit(principal, action == Action::"issue", resource == Grant::"deploy") when { context.approved };
`;

export const RATE_LIMIT_PER_MINUTE = 60;

export async function journeyOptions(): Promise<TestBrokerOptions & { github: TestIssuer }> {
  const github = await createTestIssuer({ name: 'github', kind: 'github-actions' });
  return {
    github,
    policies: JOURNEY_POLICIES,
    extraIssuers: [github],
    grants: {
      'artifacts-read': {
        provider: 'jwt',
        audience: 'https://artifacts.test',
        scopes: ['read'],
        maxTtlSeconds: 600,
      },
      deploy: { provider: 'jwt', audience: 'https://deploy.test', maxTtlSeconds: 300, approval: 'required' },
    },
    broker: { requestsPerMinutePerIdentity: RATE_LIMIT_PER_MINUTE },
    audit: { sealIntervalMs: 100 },
    revocation: { sweepIntervalMs: 200, sweepGraceMs: 200 },
  };
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

export async function runJourney(broker: TestBroker, github: TestIssuer): Promise<void> {
  const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
  const cli = (args: string[]) =>
    runTasklease(args, { TASKLEASE_ADDR: broker.url, TASKLEASE_TOKEN: admin }, { timeoutMs: 60_000 });
  const leaseState = async (leaseId: string) => (await broker.context.deps.leases.get(leaseId))?.state;

  // Declare and issue; the token introspects active.
  const agent = await broker.agents.sign({ sub: 'journey' });
  const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'journey', ticket: 'OPS-1' });
  expect(task.status).toBe(201);
  const credentials = `/v1/tasks/${task.body.taskId}/credentials`;
  const issued = await broker.call('POST', credentials, agent, { grant: 'artifacts-read' });
  expect(issued.status).toBe(201);
  expect(decodeJwt(issued.body.credential.token)).toMatchObject({
    jti: issued.body.leaseId,
    task: task.body.taskId,
  });

  // A lease of one second is settled as expired by the worker.
  const brief = await broker.call('POST', credentials, agent, { grant: 'artifacts-read', ttlSeconds: 1 });
  expect(brief.status).toBe(201);
  await waitFor(async () => (await leaseState(brief.body.leaseId)) === 'expired', 15_000);

  // A step-up approval: 202, an approver approves, the same call again issues.
  const pending = await broker.call('POST', credentials, agent, { grant: 'deploy', reason: 'release 1.2' });
  expect(pending.status).toBe(202);
  const approver = await broker.admins.sign({ sub: 'approver@example.com' });
  const approved = await broker.call('POST', `/v1/approvals/${pending.body.approvalId}/approve`, approver, {
    reason: 'release window',
  });
  expect(approved.status).toBe(200);
  const deploy = await broker.call('POST', credentials, agent, {
    grant: 'deploy',
    approvalId: pending.body.approvalId,
  });
  expect(deploy.status).toBe(201);

  // Completing the task revokes its live leases.
  const completed = await broker.call('POST', `/v1/tasks/${task.body.taskId}/complete`, agent, {
    outcome: 'succeeded',
  });
  expect(completed.status).toBe(200);
  expect(completed.body.revokedLeases).toEqual(
    expect.arrayContaining([issued.body.leaseId, deploy.body.leaseId]),
  );
  await waitFor(async () => (await leaseState(issued.body.leaseId)) === 'revoked', 15_000);

  // A bulk revocation by identity, followed to its end by the CLI.
  const other = await broker.agents.sign({ sub: 'bulk-target' });
  const otherTask = await broker.call('POST', '/v1/tasks', other, { purpose: 'bulk', ticket: 'OPS-2' });
  for (let i = 0; i < 5; i++)
    expect(
      (
        await broker.call('POST', `/v1/tasks/${otherTask.body.taskId}/credentials`, other, {
          grant: 'artifacts-read',
        })
      ).status,
    ).toBe(201);
  const bulk = await cli(['lease', 'revoke', '--identity', 'bulk-target', '--reason', 'INC-1', '--wait']);
  expect(bulk.code).toBe(0);
  expect(bulk.stdout).toMatch(/^revoking 5 of 5 matched$/m);
  expect(bulk.stdout).toMatch(/^settled 5 of 5 \(revoked 5\)$/m);
  // Progress goes to stderr; it ends with every lease settled.
  expect(bulk.stderr.trim().split('\n').pop()).toBe('revoking: 5 of 5 settled, 0 irrevocable');

  // Token exchange: a CI job's token for a credential in the job's own task.
  const { iss: _iss, aud: _aud, ...claims } = platformClaims('github-actions');
  const exchanged = await fetch(`${broker.url}/v1/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: await github.sign({ ...claims, jti: randomUUID() }),
      subject_token_type: JWT_TYPE,
      audience: 'artifacts-read',
    }).toString(),
  });
  expect(exchanged.status).toBe(200);
  expect(((await exchanged.json()) as { lease_id: string }).lease_id).toMatch(/^[0-9A-Za-z]{22}$/);

  // The per-identity rate limit holds (counted in Redis): the request past it answers 429.
  const chatty = await broker.agents.sign({ sub: 'chatty' });
  const statuses: number[] = [];
  for (let i = 0; i <= RATE_LIMIT_PER_MINUTE; i++)
    statuses.push((await broker.call('GET', `/v1/tasks/${task.body.taskId}`, chatty)).status);
  expect(statuses.slice(0, RATE_LIMIT_PER_MINUTE).every((status) => status === 404)).toBe(true);
  expect(statuses[RATE_LIMIT_PER_MINUTE]).toBe(429);

  await expectAuditVerifies(broker, cli);
}

/** Once everything appended is sealed, `tasklease audit verify` passes. */
export async function expectAuditVerifies(
  broker: TestBroker,
  cli: (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>,
): Promise<void> {
  const { redis, keys } = broker.context;
  await waitFor(async () => {
    const [newestEvent] = await redis.xrevrange(keys.audit(), '+', '-', 'COUNT', 1);
    return newestEvent && (await broker.context.deps.audit.newestSeal())?.id === newestEvent[0];
  }, 15_000);
  const verified = await cli(['audit', 'verify', '--json']);
  expect(verified.stderr).toBe('');
  expect(JSON.parse(verified.stdout)).toMatchObject({ ok: true, problems: [] });
  expect(verified.code).toBe(0);
}
