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

  describe('open tasks per identity', () => {
    let broker: TestBroker;
    // The broker's clock, moved on by a test instead of waiting for a task to expire.
    let clockOffsetMs = 0;
    beforeAll(async () => {
      broker = await startTestBroker({
        policies: POLICIES,
        broker: { maxOpenTasksPerIdentity: 3 },
        nowMs: () => Date.now() + clockOffsetMs,
      });
    });
    afterAll(async () => {
      await broker?.close();
    });

    const declare = (token: string, ttlSeconds = 600) =>
      broker.call('POST', '/v1/tasks', token, { purpose: 'open task quota', ticket: 'OPS-2', ttlSeconds });
    const openTasks = (subject: string) =>
      broker.context.redis.zrange(broker.context.keys.identityOpenTasks(`agents/${subject}`), 0, -1);
    const refusalsCounted = async () => {
      const text = await (await fetch(`${broker.url}/metrics`)).text();
      const line = /^tasklease_quota_refusals_total\{quota="open_tasks_per_identity"\} (\d+)$/m.exec(text);
      return Number(line?.[1] ?? 0);
    };

    it('refuses the task beyond the quota with 429 task_limit_reached, counted; completing one frees a place', async () => {
      const agent = await broker.agents.sign({ sub: 'busy-agent' });
      const refusedBefore = await refusalsCounted();
      const declared = [await declare(agent), await declare(agent), await declare(agent)];
      expect(declared.map((answer) => answer.status)).toEqual([201, 201, 201]);
      const fourth = await declare(agent);
      expect(fourth).toEqual({
        status: 429,
        body: {
          error: 'task_limit_reached',
          message: 'this identity holds its quota of 3 open tasks: complete one first',
        },
      });
      expect(await refusalsCounted()).toBe(refusedBefore + 1);
      // Nothing was written for the refused one; another identity is not affected.
      expect((await openTasks('busy-agent')).sort()).toEqual(declared.map((a) => a.body.taskId).sort());
      const other = await broker.agents.sign({ sub: 'other-agent' });
      expect((await declare(other)).status).toBe(201);

      const [first] = declared;
      const done = await broker.call('POST', `/v1/tasks/${first?.body.taskId}/complete`, agent, {
        outcome: 'succeeded',
      });
      expect(done.status).toBe(200);
      expect((await declare(agent)).status).toBe(201);
      expect((await declare(agent)).status).toBe(429);
    });

    it('holds the quota exactly under 40 concurrent declarations', async () => {
      const agent = await broker.agents.sign({ sub: 'racing-declarer' });
      const answers = await Promise.all(Array.from({ length: 40 }, () => declare(agent)));
      const created = answers.filter((answer) => answer.status === 201);
      expect(created).toHaveLength(3);
      expect(answers.filter((answer) => answer.status !== 201).map((answer) => answer.body.error)).toEqual(
        Array(37).fill('task_limit_reached'),
      );
      // Exactly the three answered tasks exist for this identity: no refused one half-written.
      expect((await openTasks('racing-declarer')).sort()).toEqual(created.map((a) => a.body.taskId).sort());
      for (const answer of created)
        expect((await broker.call('GET', `/v1/tasks/${answer.body.taskId}`, agent)).status).toBe(200);
    });

    it('an expired task holds no place: past its TTL, the identity may declare again', async () => {
      const agent = await broker.agents.sign({ sub: 'forgetful-agent' });
      const short = [await declare(agent, 60), await declare(agent, 60), await declare(agent, 600)];
      expect(short.map((answer) => answer.status)).toEqual([201, 201, 201]);
      expect((await declare(agent)).status).toBe(429);
      clockOffsetMs += 61_000;
      try {
        // The two expired tasks were never completed; they free their places by expiring.
        expect((await declare(agent)).status).toBe(201);
        expect((await declare(agent)).status).toBe(201);
        expect((await declare(agent)).status).toBe(429);
        expect(await openTasks('forgetful-agent')).toHaveLength(3);
      } finally {
        clockOffsetMs -= 61_000;
      }
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
