import { startLocalRedis, type LocalRedis } from '../../src/wiring/local-redis';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';

/**
 * The broker keeps its recent lease writes and re-applies them when the Redis primary changes. Here the
 * change is the simplest one that loses acknowledged writes: a Redis without persistence killed and started
 * again, empty, on the same port. A failover does the same to the writes the promoted replica never got.
 */
describe('writes re-applied after the Redis primary changed', () => {
  let redis: LocalRedis;
  let broker: TestBroker;
  let dir: string;
  beforeAll(async () => {
    dir = tempDir('replay');
    redis = await startLocalRedis(dir, { appendOnly: false });
    broker = await startTestBroker({
      redisUrl: redis.url,
      revocation: { sweepIntervalMs: 200, sweepGraceMs: 0 },
    });
  });
  afterAll(async () => {
    await broker.close().catch(() => undefined);
    await redis.stop();
  });

  it('brings back every lease whose credential was returned, and revokes those whose task went with it', async () => {
    const agent = await broker.agents.sign({ sub: 'replayed' });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'replay', ticket: 'OPS-77' });
    const issued: string[] = [];
    for (let i = 0; i < 20; i++) {
      const answer = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
        grant: 'artifacts-read',
      });
      expect(answer.status).toBe(201);
      issued.push(answer.body.leaseId as string);
    }
    const primaryChanges = async () =>
      Number(
        /^tasklease_redis_primary_changes_total (\d+)/m.exec(
          await broker.context.metrics.registry.metrics(),
        )?.[1],
      );
    expect(await primaryChanges()).toBe(0);

    await new Promise<void>((resolve) => {
      redis.process.once('exit', () => resolve());
      redis.process.kill('SIGKILL');
    });
    redis = await startLocalRedis(dir, { appendOnly: false, port: redis.port });
    const { leases } = broker.context.deps;
    // Empty at first; the broker sees a new primary (its replication id changed) and writes the leases back.
    const found = () => leases.getMany(issued).catch(() => []);
    await waitFor(async () => (await found()).length === issued.length, 10_000);
    expect(await primaryChanges()).toBe(1);
    const reapplied = /^tasklease_failover_writes_reapplied_total (\d+)/m.exec(
      await broker.context.metrics.registry.metrics(),
    );
    expect(Number(reapplied?.[1])).toBeGreaterThanOrEqual(issued.length);

    // Their task did not survive, so nothing may use them any more: each is revoked, none is left active.
    await waitFor(async () => (await found()).every((lease) => lease.state === 'revoked'), 10_000);
    const events = await broker.context.deps.audit.query({ task: task.body.taskId, limit: 1000 });
    const issuedEvents = events
      .filter((event) => event.type === 'credential.issued')
      .map((event) => event.lease);
    expect(new Set(issuedEvents)).toEqual(new Set(issued));
  });
});
