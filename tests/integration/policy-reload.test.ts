import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { startTestBroker, type TestBroker } from '../support/broker';

/** Declaring is allowed for OPS tickets; no policy permits issuing anything yet. */
const BEFORE = `
@id("declare-ops")
permit(principal, action == Action::"declareTask", resource) when { context.task.ticket like "OPS-*" };
`;
const AFTER = `${BEFORE}
@id("agents-read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read")
when { principal.issuer == "agents" && context.task.ticket like "OPS-*" };
`;

describe('policy reload in a running broker', () => {
  let broker: TestBroker;
  let agent: string;
  let admin: string;
  let policyFile: string;
  beforeAll(async () => {
    broker = await startTestBroker({ policies: BEFORE });
    // config.policies is the policies folder (resolved); the harness writes test.cedar into it.
    policyFile = path.join(broker.config.policies, 'test.cedar');
    agent = await broker.agents.sign({ sub: 'planner' });
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
  });
  afterEach(() => writeFileSync(policyFile, BEFORE));
  afterAll(() => broker.close());

  const declare = async () => {
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'nightly report',
      ticket: 'OPS-42',
    });
    expect(task.status).toBe(201);
    return task.body.taskId as string;
  };
  const issue = (taskId: string) =>
    broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 60,
    });
  const auditReasons = async (taskId: string) => {
    const audit = await broker.call('GET', `/v1/audit?task=${taskId}`, admin);
    expect(audit.status).toBe(200);
    return (audit.body.events as { type: string; reason?: string }[]).map(
      (event) => `${event.type}: ${event.reason}`,
    );
  };

  it('denies, then allows the same request once the edited file is reloaded; requests in flight never fail', async () => {
    const taskId = await declare();
    const denied = await issue(taskId);
    expect(denied.status).toBe(403);
    expect(denied.body.error).toBe('policy_denied');

    writeFileSync(policyFile, AFTER);
    // Written but not reloaded: still the old set.
    expect((await issue(taskId)).status).toBe(403);

    // 100 requests in flight around the reload, 100 more once it has returned.
    const before = Array.from({ length: 100 }, () => issue(taskId));
    await Promise.race(before);
    await broker.api.reloadPolicies();
    const after = Array.from({ length: 100 }, () => issue(taskId));
    const inFlight = await Promise.all(before);
    const afterReload = await Promise.all(after);

    const statuses = [...inFlight, ...afterReload].map((response) => response.status);
    expect(statuses.filter((status) => status !== 201 && status !== 403)).toEqual([]);
    expect(inFlight.filter((r) => r.status === 403).every((r) => r.body.error === 'policy_denied')).toBe(
      true,
    );
    expect(inFlight.some((r) => r.status === 403)).toBe(true);
    expect(afterReload.map((r) => r.status)).toEqual(Array(100).fill(201));

    const granted = await issue(taskId);
    expect(granted.status).toBe(201);
    expect(granted.body).toMatchObject({ grant: 'artifacts-read', provider: 'jwt' });

    // The audit says why each decision went the way it did.
    const reasons = await auditReasons(taskId);
    expect(reasons).toContain('credential.denied: no permit policy matched');
    expect(reasons).toContain('credential.issued: permitted by agents-read');
    expect(reasons).toContain('task.declared: permitted by declare-ops');
  });

  it('keeps the policies in force when the edited file does not parse', async () => {
    writeFileSync(policyFile, AFTER);
    await broker.api.reloadPolicies();
    const taskId = await declare();
    expect((await issue(taskId)).status).toBe(201);

    // A half-saved edit that would also have dropped the permit: the broker keeps serving the old set.
    writeFileSync(
      policyFile,
      `${BEFORE}\n@id("agents-read") permit(principal, action == Action::"issue", resource ==`,
    );
    await expect(broker.api.reloadPolicies()).resolves.toBeUndefined();
    expect(broker.context.deps.policy.policyCount).toBe(2);
    expect((await issue(taskId)).status).toBe(201);

    // Fixed, the edit applies: the permit is gone.
    writeFileSync(policyFile, BEFORE);
    await broker.api.reloadPolicies();
    expect(broker.context.deps.policy.policyCount).toBe(1);
    const denied = await issue(taskId);
    expect(denied.status).toBe(403);
    expect(denied.body.error).toBe('policy_denied');
  });
});
