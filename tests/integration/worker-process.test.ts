import { startTestBroker, testRedisUrl, waitFor, type TestBroker } from '../support/broker';
import { freePort, spawnTasklease, waitForHttp, type TaskleaseProcess } from '../support/processes';

/**
 * The real `tasklease worker` process against a real Redis: killed with SIGKILL in the middle of a burst of
 * expiries, then restarted, it still settles every lease — none is lost.
 */
describe('tasklease worker as its own process', () => {
  let broker: TestBroker;
  let agent: string;
  const workers: TaskleaseProcess[] = [];

  beforeAll(async () => {
    broker = await startTestBroker({ worker: false });
    agent = await broker.agents.sign({ sub: 'batch-agent' });
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await broker.close();
  });

  const startWorker = async () => {
    const port = await freePort();
    const worker = spawnTasklease(['worker'], {
      TASKLEASE_CONFIG: broker.configFile,
      REDIS_URL: testRedisUrl(),
      WORKER_PORT: String(port),
    });
    workers.push(worker);
    await waitForHttp(`http://127.0.0.1:${port}/readyz`, worker);
    return worker;
  };

  const issueMany = async (taskId: string, count: number, ttlSeconds: number) => {
    const ids: string[] = [];
    for (let i = 0; i < count; i += 25) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(25, count - i) }, () =>
          broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
            grant: 'artifacts-read',
            ttlSeconds,
          }),
        ),
      );
      for (const response of batch) {
        expect(response.status).toBe(201);
        ids.push(response.body.leaseId);
      }
    }
    return ids;
  };

  const states = async (ids: string[]) =>
    (await broker.context.deps.leases.getMany(ids)).map((lease) => lease.state);

  it('revokes everything after a SIGKILL mid-burst and a restart, within seconds', async () => {
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'kill test',
      ticket: 'OPS-1',
      ttlSeconds: 3600,
    });
    const first = await issueMany(task.body.taskId, 300, 2);
    const worker = await startWorker();

    // Kill it as soon as it has started settling the burst: some jobs are mid-flight.
    await waitFor(async () => (await states(first)).some((s) => s === 'expired'), 10_000, 10);
    worker.child.kill('SIGKILL');
    const afterKill = await states(first);
    expect(afterKill.filter((s) => s === 'expired').length).toBeLessThan(first.length);

    // Leases that expire while no worker runs must not be lost either.
    const second = await issueMany(task.body.taskId, 100, 1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await states(second)).every((s) => s === 'active')).toBe(true);

    const restartedAt = Date.now();
    await startWorker();
    await waitFor(
      async () => (await states([...first, ...second])).every((s) => s === 'expired'),
      15_000,
      100,
    );
    // The brief: revocations resume within 10 s of a new worker starting.
    expect(Date.now() - restartedAt).toBeLessThan(10_000);
    expect(await broker.context.deps.leases.countUnsettled()).toBe(0);
  }, 60_000);

  it('completing a task revokes its leases through the worker process', async () => {
    await startWorker();
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'complete test', ticket: 'OPS-2' });
    const ids = await issueMany(task.body.taskId, 20, 600);
    const done = await broker.call('POST', `/v1/tasks/${task.body.taskId}/complete`, agent, {
      outcome: 'cancelled',
    });
    expect(done.body.revokedLeases).toHaveLength(20);
    await waitFor(async () => (await states(ids)).every((s) => s === 'revoked'), 5_000);
    const leases = await broker.context.deps.leases.getMany(ids);
    expect(
      leases.every(
        (lease) =>
          lease.revocation === 'jwt-denylisted' && lease.revokeReason === 'task completed: cancelled',
      ),
    ).toBe(true);
  }, 30_000);
});
