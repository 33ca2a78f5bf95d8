import { createDurableWrites } from '../../src/redis/durable-writes';
import type { RedisClient } from '../../src/redis/connection';

/** A connection that answers every script as having taken effect, and records what it was asked. */
function recordingRedis() {
  const calls: { name: string; args: unknown[] }[] = [];
  const script = (name: string, answer: string) =>
    jest.fn(async (...args: unknown[]) => {
      calls.push({ name, args });
      return answer;
    });
  const redis = {
    completeTask: script('completeTask', 'completed'),
    settleLease: script('settleLease', 'settled'),
    markRevoking: script('markRevoking', 'not_active'),
  };
  return { redis: redis as unknown as RedisClient, calls };
}

describe('the failover replay journal', () => {
  const start = 1_800_000_000_000;
  const setUp = (replaySeconds: number, replayMaxWrites: number) => {
    const { redis, calls } = recordingRedis();
    let clock = start;
    const durable = createDurableWrites(redis, {
      routingKey: 'k',
      replicaAcks: 0,
      replicaAckTimeoutMs: 0,
      replaySeconds,
      replayMaxWrites,
      nowMs: () => clock,
      onNotReplicated: () => undefined,
    });
    return { durable, calls, advance: (ms: number) => (clock += ms) };
  };

  it('keeps at most replayMaxWrites writes, and none older than replaySeconds, oldest first', async () => {
    const { durable, calls, advance } = setUp(60, 3000);
    for (let i = 0; i < 5000; i++) {
      await durable.run('completeTask', ['t', 'o'], ['succeeded', `write ${i}`, start + i * 10, `task-${i}`]);
      advance(10);
    }
    expect(durable.kept()).toBe(3000);
    // The 3,000 kept were written from 20 s to 50 s; at 90 s, those before 30 s are past the replay window.
    advance(40_000);
    await durable.run('completeTask', ['t', 'o'], ['succeeded', 'last', 0, 'task-last']);
    expect(durable.kept()).toBe(3001 - 1000);

    calls.length = 0;
    const report = await durable.replay();
    expect(report).toEqual({ replayed: 2001, reapplied: 2001 });
    expect(calls.map((call) => call.args[5])).toEqual([
      ...Array.from({ length: 2000 }, (_, i) => `task-${3000 + i}`),
      'task-last',
    ]);
  });

  it('replays each write exactly as it was made, and only the writes that took effect', async () => {
    const { durable, calls } = setUp(60, 100);
    const odd = [
      'succeeded',
      'a "quoted" summary, a lone \ud800 surrogate, and \u2028',
      1234567890123,
      'task',
    ];
    await durable.run('settleLease', ['1', '2', '3', '4', '5', '6', '7'], odd);
    // markRevoking answered not_active: nothing changed, so there is nothing to replay.
    await durable.run('markRevoking', ['1', '2', '3'], ['x']);
    calls.length = 0;
    await durable.replay();
    expect(calls).toEqual([{ name: 'settleLease', args: ['1', '2', '3', '4', '5', '6', '7', ...odd] }]);
  });

  it('keeps nothing when the replay is off', async () => {
    const { durable } = setUp(0, 100);
    await durable.run('completeTask', ['t', 'o'], ['succeeded', '', 0, 'task']);
    expect(durable.kept()).toBe(0);
  });
});
