import { createLogger } from '../../src/observability/logger';
import { startApi, type RunningApi } from '../../src/wiring/serve';
import { startTestBroker, testRedisTarget, waitFor, type TestBroker } from '../support/broker';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");
`;

/** Quotas on active leases (per task, per identity) and a per-identity request rate, at their edges. */
describe('quotas and rate limits', () => {
  describe('active leases per task and per identity', () => {
    let broker: TestBroker;
    beforeAll(async () => {
      broker = await startTestBroker({
        policies: POLICIES,
        broker: { maxActiveLeasesPerTask: 2, maxActiveLeasesPerIdentity: 3 },
      });
    });
    afterAll(async () => {
      await broker?.close();
    });

    const declare = async (token: string) =>
      (await broker.call('POST', '/v1/tasks', token, { purpose: 'quota test', ticket: 'OPS-1' })).body
        .taskId as string;
    const issue = (token: string, taskId: string) =>
      broker.call('POST', `/v1/tasks/${taskId}/credentials`, token, {
        grant: 'artifacts-read',
        ttlSeconds: 300,
      });
    const revoke = async (leaseId: string) => {
      const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
      await broker.call('POST', `/v1/leases/${leaseId}/revoke`, admin, { reason: 'quota test' });
      await waitFor(
        async () =>
          (await broker.call('GET', `/v1/leases?state=revoked&limit=1000`, admin)).body.leases.some(
            (l: any) => l.leaseId === leaseId,
          ),
        10_000,
      );
    };

    it('a task holds at most its quota; a lease settled frees a place', async () => {
      const agent = await broker.agents.sign({ sub: 'task-quota-agent' });
      const taskId = await declare(agent);
      const first = await issue(agent, taskId);
      expect(first.status).toBe(201);
      expect((await issue(agent, taskId)).status).toBe(201);
      const third = await issue(agent, taskId);
      expect(third.status).toBe(429);
      expect(third.body).toEqual({
        error: 'lease_limit_reached',
        message: 'this task holds its quota of 2 active leases',
      });
      // Nothing was recorded for the refused one.
      const task = await broker.call('GET', `/v1/tasks/${taskId}`, agent);
      expect(task.body.leases).toHaveLength(2);
      await revoke(first.body.leaseId);
      expect((await issue(agent, taskId)).status).toBe(201);
    });

    it('holds the task quota under 50 concurrent requests (the limit docs/policies.md points to)', async () => {
      const agent = await broker.agents.sign({ sub: 'racing-agent' });
      const taskId = await declare(agent);
      const answers = await Promise.all(Array.from({ length: 50 }, () => issue(agent, taskId)));
      const statuses = answers.map((answer) => answer.status);
      expect(statuses.filter((status) => status === 201)).toHaveLength(2);
      expect(statuses.filter((status) => status !== 201).every((status) => status === 429)).toBe(true);
      const task = await broker.call('GET', `/v1/tasks/${taskId}`, agent);
      expect(task.body.leases).toHaveLength(2);
    });

    it('an identity holds at most its quota across its tasks; other identities are not affected', async () => {
      const agent = await broker.agents.sign({ sub: 'identity-quota-agent' });
      const [a, b] = [await declare(agent), await declare(agent)];
      const issued = [await issue(agent, a), await issue(agent, a), await issue(agent, b)];
      expect(issued.map((r) => r.status)).toEqual([201, 201, 201]);
      const fourth = await issue(agent, b);
      expect(fourth.status).toBe(429);
      expect(fourth.body.message).toBe('this identity holds its quota of 3 active leases');
      const other = await broker.agents.sign({ sub: 'someone-else' });
      expect((await issue(other, await declare(other))).status).toBe(201);
      // A settled lease gives the place back; refusals did not use any up.
      await revoke(issued[2]?.body.leaseId);
      expect((await issue(agent, b)).status).toBe(201);
      expect((await issue(agent, b)).status).toBe(429);
    });
  });

  describe('requests per minute per identity', () => {
    let broker: TestBroker;
    let replica: RunningApi;
    beforeAll(async () => {
      broker = await startTestBroker({ policies: POLICIES, broker: { requestsPerMinutePerIdentity: 5 } });
      // A second API replica on the same Redis and prefix: the count is shared.
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

    it('allows the limit, across replicas, then answers 429 with Retry-After; other identities go on', async () => {
      const agent = await broker.agents.sign({ sub: 'chatty-agent' });
      const get = (url: string) =>
        fetch(`${url}/v1/tasks/${'0'.repeat(32)}`, { headers: { authorization: `Bearer ${agent}` } });
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await get(i % 2 ? replica.url : broker.url)).status);
      // Within the limit: the unknown task answers 404 as usual.
      expect(statuses).toEqual([404, 404, 404, 404, 404]);
      const sixth = await get(replica.url);
      expect(sixth.status).toBe(429);
      expect(await sixth.json()).toEqual({
        error: 'rate_limited',
        message: 'more than 5 requests a minute from this identity',
      });
      const retryAfter = Number(sixth.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(60);
      const other = await broker.agents.sign({ sub: 'quiet-agent' });
      expect((await broker.call('GET', `/v1/tasks/${'0'.repeat(32)}`, other)).status).toBe(404);
    });
  });
});
