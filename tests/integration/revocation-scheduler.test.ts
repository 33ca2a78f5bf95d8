import { startTestBroker, waitFor, type TestBroker, type TestBrokerOptions } from '../support/broker';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("issue")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");
`;

/**
 * Issuance queues no job: the due index is the schedule, and the worker's scheduler moves what is due into
 * revocation jobs in bulk. A lease whose job is lost comes due again; with the scheduler not running, the
 * sweeper still revokes everything, a grace later.
 */
describe('the revocation scheduler', () => {
  const setUp = (revocation: TestBrokerOptions['revocation']) =>
    startTestBroker({ policies: POLICIES, revocation });

  const issueMany = async (broker: TestBroker, count: number, ttlSeconds: number) => {
    const agent = await broker.agents.sign({ sub: `agent-${Math.random()}` }, { ttlSeconds: 3600 });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'schedule', ticket: 'OPS-3' });
    expect(task.status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < count; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, count - i) }, () =>
          broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
            grant: 'artifacts-read',
            ttlSeconds,
          }),
        ),
      );
      for (const answer of batch) {
        expect(answer.status).toBe(201);
        ids.push(answer.body.leaseId);
      }
    }
    return ids;
  };
  const jobsIn = async (broker: TestBroker) => {
    const counts = await broker.context.deps.queue.queue.getJobCounts();
    return Object.values(counts).reduce((sum, n) => sum + n, 0);
  };
  const states = async (broker: TestBroker, ids: string[]) => {
    const byState: Record<string, number> = {};
    for (const id of ids) {
      const state = (await broker.context.deps.leases.get(id))?.state ?? 'missing';
      byState[state] = (byState[state] ?? 0) + 1;
    }
    return byState;
  };

  describe('with the scheduler running', () => {
    let broker: TestBroker;
    beforeAll(async () => {
      broker = await setUp({ backoffMs: 50, attempts: 3, scheduleIntervalMs: 100, sweepGraceMs: 2000 });
    });
    afterAll(() => broker?.close());

    it('issuing leaves no BullMQ job behind; each lease expires from the due index', async () => {
      const long = await issueMany(broker, 100, 600);
      expect(await jobsIn(broker)).toBe(0);
      for (const id of long.slice(0, 5))
        expect(await broker.context.redis.zscore(broker.context.keys.due(), id)).not.toBeNull();

      const short = await issueMany(broker, 20, 1);
      await waitFor(async () => (await states(broker, short)).expired === 20, 10_000);
      expect(await states(broker, long)).toEqual({ active: 100 });
      await waitFor(async () => (await jobsIn(broker)) === 0, 5_000);
    });

    it('a burst of 3,000 leases due together is queued in bulk and all expire', async () => {
      const ids = await issueMany(broker, 3_000, 4);
      await waitFor(async () => (await states(broker, ids)).expired === ids.length, 30_000, 200);
      // Nothing left over: no job, no due entry.
      await waitFor(async () => (await jobsIn(broker)) === 0, 5_000);
      const due = await broker.context.redis.zmscore(broker.context.keys.due(), ...ids);
      expect(due.filter((score) => score !== null)).toEqual([]);
    }, 120_000);

    it('a lease claimed but never queued (a crash between the two) comes due again and expires', async () => {
      const ids = await issueMany(broker, 10, 1);
      // What a scheduler dying after its claim leaves: the leases claimed (here ahead of their time, before
      // the running scheduler can), due again 2.5 s on, and no job queued for them.
      const claimed = await broker.context.deps.leases.claimDue(
        Date.now() + 2_000,
        Date.now() + 2_500,
        10_000,
      );
      expect(claimed).toEqual(expect.arrayContaining(ids));
      expect(await jobsIn(broker)).toBe(0);
      await waitFor(async () => (await states(broker, ids)).expired === ids.length, 10_000);
    });
  });

  describe('with the scheduler not running', () => {
    let broker: TestBroker;
    beforeAll(async () => {
      // Its first tick is 10 s off: within this test only the sweeper moves anything.
      broker = await setUp({
        backoffMs: 50,
        attempts: 3,
        scheduleIntervalMs: 10_000,
        sweepIntervalMs: 200,
        sweepGraceMs: 500,
      });
    });
    afterAll(() => broker?.close());

    it('the sweeper still revokes every lease, a grace after it is due', async () => {
      const ids = await issueMany(broker, 200, 1);
      await waitFor(async () => (await states(broker, ids)).expired === ids.length, 8_000, 100);
    });
  });
});
