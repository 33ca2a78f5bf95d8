import { startTestBroker, type TestBroker } from '../support/broker';
import { expectNothingLost, runFailoverTrial, STEADY_BROKER } from '../support/failover-trial';
import { journeyOptions, runJourney } from '../support/journey';
import { startSentinelSet, type SentinelSet } from '../support/redis-topology';
import { parseRedisTarget } from '../../src/config/redis-target';

/**
 * tasklease on a real Sentinel set (1 primary, 2 replicas, 3 sentinels) started from redis-server: the
 * whole journey, then failovers under steady issuance through two API and two worker processes.
 */
describe('on Redis Sentinel', () => {
  let set: SentinelSet;
  let broker: TestBroker | undefined;
  beforeEach(async () => {
    set = await startSentinelSet({ replicas: 2, sentinels: 3 });
  });
  afterEach(async () => {
    await broker?.close().catch(() => undefined);
    broker = undefined;
    await set.stop();
  });

  it('runs the whole journey, with every lease write confirmed by a replica', async () => {
    const { github, ...options } = await journeyOptions();
    broker = await startTestBroker({
      ...options,
      redis: parseRedisTarget(set.url),
      broker: { ...options.broker, replicaAcks: 1 },
    });
    await runJourney(broker, github);
  });

  it('loses no returned lease when the primary is killed (kill -9), and issues again within 10 s', async () => {
    broker = await startTestBroker({ ...STEADY_BROKER, redis: parseRedisTarget(set.url) });
    const report = await runFailoverTrial({
      broker,
      redisUrl: set.url,
      failover: async () => {
        const old = await set.primary();
        await old.kill();
        await set.waitForPromotion(old);
      },
    });
    expectNothingLost('sentinel kill -9', report);
  });

  it('loses no returned lease in a planned failover (SENTINEL FAILOVER), and issues again within 10 s', async () => {
    broker = await startTestBroker({ ...STEADY_BROKER, redis: parseRedisTarget(set.url) });
    const report = await runFailoverTrial({
      broker,
      redisUrl: set.url,
      failover: async () => void (await set.failover()),
    });
    expectNothingLost('sentinel failover', report);
  });
});
