import { createLogger } from '../../src/observability/logger';
import { startApi, type RunningApi } from '../../src/wiring/serve';
import { startTestBroker, testRedisTarget, type TestBroker } from '../support/broker';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");
`;

const call = async (url: string, method: string, route: string, token: string, body?: unknown) => {
  const response = await fetch(`${url}${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as any };
};

/**
 * Issuance reads an open task from the API's own cache (its declared facts never change). A stale entry
 * never issues into a closed task: createLease checks atomically that the task is open.
 */
describe('the task cache of issuance', () => {
  let broker: TestBroker;
  let replica: RunningApi;
  beforeAll(async () => {
    broker = await startTestBroker({ policies: POLICIES });
    replica = await startApi({
      config: broker.config,
      redis: testRedisTarget(),
      signingKeys: broker.signingKeys,
      logger: createLogger('silent'),
      host: '127.0.0.1',
      port: 0,
    });
  });
  afterAll(async () => {
    await replica?.close();
    await broker?.close();
  });

  it('a task completed through another replica, then issued on this one (cached open): 409, nothing issued', async () => {
    const agent = await broker.agents.sign({ sub: 'cached-agent' });
    const task = await call(broker.url, 'POST', '/v1/tasks', agent, { purpose: 'cache', ticket: 'OPS-4' });
    expect(task.status).toBe(201);
    const route = `/v1/tasks/${task.body.taskId}/credentials`;
    // This replica reads the task, open, and keeps it.
    const first = await call(broker.url, 'POST', route, agent, { grant: 'artifacts-read', ttlSeconds: 60 });
    expect(first.status).toBe(201);

    const done = await call(replica.url, 'POST', `/v1/tasks/${task.body.taskId}/complete`, agent, {
      outcome: 'succeeded',
    });
    expect(done.status).toBe(200);

    const stale = await call(broker.url, 'POST', route, agent, { grant: 'artifacts-read', ttlSeconds: 60 });
    expect(stale).toEqual({
      status: 409,
      body: {
        error: 'task_not_open',
        message: 'the task was completed or expired while the credential was minted',
      },
    });
    // The task holds the one lease it had, and nothing more.
    const view = await call(replica.url, 'GET', `/v1/tasks/${task.body.taskId}`, agent);
    expect(view.body.leases.map((lease: { leaseId: string }) => lease.leaseId)).toEqual([first.body.leaseId]);
    // Completed on this replica: refused before minting, from the task as Redis has it.
    const again = await call(broker.url, 'POST', route, agent, { grant: 'artifacts-read', ttlSeconds: 60 });
    expect(again.status).toBe(409);
  });

  it('a task completed on this replica is forgotten at once: the next call reads it closed', async () => {
    const agent = await broker.agents.sign({ sub: 'local-agent' });
    const task = await call(broker.url, 'POST', '/v1/tasks', agent, { purpose: 'cache', ticket: 'OPS-5' });
    const route = `/v1/tasks/${task.body.taskId}/credentials`;
    expect((await call(broker.url, 'POST', route, agent, { grant: 'artifacts-read' })).status).toBe(201);
    expect(
      (await call(broker.url, 'POST', `/v1/tasks/${task.body.taskId}/complete`, agent, { outcome: 'failed' }))
        .status,
    ).toBe(200);
    expect(await call(broker.url, 'POST', route, agent, { grant: 'artifacts-read' })).toEqual({
      status: 409,
      body: { error: 'task_not_open', message: 'the task is completed' },
    });
  });
});

describe('a policy that reads context.activeLeases', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker({
      policies: `${POLICIES}
@id("two-at-most")
forbid(principal, action == Action::"issue", resource) when { context.activeLeases >= 2 };`,
    });
  });
  afterAll(() => broker?.close());

  it('sees the count as Redis has it on every call, not as a cached task had it', async () => {
    const agent = await broker.agents.sign({ sub: 'counting-agent' });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'count', ticket: 'OPS-6' });
    const issue = () =>
      broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, { grant: 'artifacts-read' });
    expect((await issue()).status).toBe(201);
    expect((await issue()).status).toBe(201);
    expect((await issue()).body.error).toBe('policy_denied');
  });
});
