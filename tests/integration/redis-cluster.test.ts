import { randomBytes } from 'node:crypto';
import { parseRedisTarget } from '../../src/config/redis-target';
import { startTestBroker, type TestBroker } from '../support/broker';
import { expectNothingLost, runFailoverTrial, STEADY_BROKER } from '../support/failover-trial';
import { journeyOptions, runJourney } from '../support/journey';
import { hashSlot, startRedisCluster, type RedisCluster } from '../support/redis-topology';

/**
 * tasklease on a real Redis Cluster (3 primaries, a replica each) started from redis-server: the whole
 * journey under a hash-tagged prefix, every key it wrote in that tag's slot, then failovers of that slot's
 * primary under steady issuance through two API and two worker processes.
 */
const taggedPrefix = () => `{t-cl-${randomBytes(4).toString('hex')}}:`;

describe('on Redis Cluster', () => {
  let cluster: RedisCluster;
  let broker: TestBroker | undefined;
  beforeEach(async () => {
    cluster = await startRedisCluster();
  });
  afterEach(async () => {
    await broker?.close().catch(() => undefined);
    broker = undefined;
    await cluster.stop();
  });

  /** The trials' broker on the cluster, under a hash-tagged prefix of its own. */
  const steadyBroker = (redisPrefix: string) =>
    startTestBroker({
      ...STEADY_BROKER,
      redis: parseRedisTarget(cluster.url),
      broker: { ...STEADY_BROKER.broker, redisPrefix },
    });

  /** Every key on the cluster, by node: the slot each is in. */
  async function slotsInUse(): Promise<Map<number, number>> {
    const slots = new Map<number, number>();
    for (const node of cluster.nodes) {
      if (node.pid === undefined || !(await node.cli('ROLE')).startsWith('master')) continue;
      for (const key of (await node.cli('--scan')).split('\n').filter(Boolean))
        slots.set(hashSlot(key), (slots.get(hashSlot(key)) ?? 0) + 1);
    }
    return slots;
  }

  it('runs the whole journey, every key (BullMQ queues too) in the prefix hash tag’s slot', async () => {
    const { github, ...options } = await journeyOptions();
    const prefix = taggedPrefix();
    broker = await startTestBroker({
      ...options,
      redis: parseRedisTarget(cluster.url),
      broker: { ...options.broker, redisPrefix: prefix, replicaAcks: 1 },
    });
    await runJourney(broker, github);
    const slots = await slotsInUse();
    expect([...slots.keys()]).toEqual([hashSlot(prefix)]);
    expect(slots.get(hashSlot(prefix))).toBeGreaterThan(20);
  });

  it('loses no returned lease when the slot’s primary is killed (kill -9), and issues again within 10 s', async () => {
    const prefix = taggedPrefix();
    broker = await steadyBroker(prefix);
    const report = await runFailoverTrial({
      broker,
      redisUrl: cluster.url,
      failover: async () => {
        const old = await cluster.primaryFor(prefix);
        await old.kill();
        await cluster.waitForPromotion(prefix, old);
        // Back as a replica of the new primary (its nodes.conf): the slot has a replica again.
        await old.restart();
      },
    });
    expectNothingLost('cluster kill -9', report);
  });

  it('loses no returned lease in a planned failover (CLUSTER FAILOVER), and issues again within 10 s', async () => {
    const prefix = taggedPrefix();
    broker = await steadyBroker(prefix);
    const report = await runFailoverTrial({
      broker,
      redisUrl: cluster.url,
      failover: async () => void (await cluster.failover(prefix)),
    });
    expectNothingLost('cluster failover', report);
  });
});
