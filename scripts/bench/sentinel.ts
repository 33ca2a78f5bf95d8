import { Redis } from 'ioredis';
import { startSentinelSet, type SentinelSet } from '../../tests/support/redis-sentinel';
import type { RedisNode } from '../../tests/support/redis-topology';
import {
  benchTempDir,
  killAtExit,
  readCpuSeconds,
  removeTempDir,
  startBrokerPair,
  type BrokerPair,
} from './processes';

/**
 * The Sentinel phase's environment: a Sentinel set from redis-server (the integration tests' helper,
 * tests/support/redis-sentinel.ts: one primary, its replicas, the sentinels) and a second `tasklease serve` +
 * `tasklease worker` on it, configured like the single-Redis pair except `broker.replicaAcks`
 * (`replicaAckTimeoutMs` at its default), so every lease write waits for that many replicas (`WAIT`).
 */

export interface SentinelEnvironment extends BrokerPair {
  set: SentinelSet;
  replicaAcks: number;
  /** The data node the sentinels named primary when the pair started. */
  primaryAtStart: RedisNode;
  /** A client of the current primary, found through the sentinels, for the lag phase's reads. */
  connect(): Redis;
}

/**
 * Data nodes as the helper starts them (noeviction, hash-max-listpack-value 256, no RDB snapshots) but without
 * their append-only file, like the single-Redis phases: the ratio is then the price of replication alone.
 */
async function withoutAppendOnlyFile(node: RedisNode): Promise<void> {
  await node.cli('CONFIG', 'SET', 'appendonly', 'no');
  const policy = (await node.cli('CONFIG', 'GET', 'maxmemory-policy')).split('\n')[1];
  if (policy !== 'noeviction')
    throw new Error(`Sentinel data node ${node.address} has maxmemory-policy ${policy}, not noeviction`);
}

export async function startSentinelEnvironment(options: {
  replicas: number;
  sentinels: number;
  replicaAcks: number;
}): Promise<SentinelEnvironment> {
  // The helper makes each node's dir with os.tmpdir(), which reads TMPDIR on every call: pointing it at a dir
  // of the bench's own while the set starts puts every node's dir under it, removed at the end however the
  // bench ends (the helper's stop() leaves them).
  const root = benchTempDir('bench-sentinel');
  const savedTmpdir = process.env.TMPDIR;
  process.env.TMPDIR = root;
  let set: SentinelSet;
  try {
    set = await startSentinelSet({
      replicas: options.replicas,
      sentinels: options.sentinels,
      // The helper's 1 s (for failover tests) risks a false failover with two cores saturated: 5 s here.
      downAfterMs: 5000,
      failoverTimeoutMs: 10_000,
    });
  } catch (error) {
    removeTempDir(root);
    throw error;
  } finally {
    if (savedTmpdir === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmpdir;
  }
  const running = set;
  killAtExit(() => [...running.nodes, ...running.sentinels].map((node) => node.pid));
  const stopSet = async () => {
    await running.stop();
    removeTempDir(root);
  };

  let pair: BrokerPair | null = null;
  try {
    await Promise.all(running.nodes.map(withoutAppendOnlyFile));
    const primaryAtStart = await running.primary();
    pair = await startBrokerPair({
      redisUrl: running.url,
      broker: { replicaAcks: options.replicaAcks },
      label: 'sentinel',
    });
    const brokers = pair;
    const dataNodeNames = new Map(
      running.nodes.map((node, index) => [node, index === 0 ? 'redisPrimary' : `redisReplica${index}`]),
    );
    return {
      ...brokers,
      set: running,
      replicaAcks: options.replicaAcks,
      primaryAtStart,
      connect: () =>
        new Redis({
          sentinels: running.sentinels.map(({ host, port }) => ({ host, port })),
          name: running.masterName,
          connectionName: 'bench',
        }),
      cpuSeconds: () => {
        const sentinels = running.sentinels.map((node) => readCpuSeconds(node.pid));
        return {
          ...brokers.cpuSeconds(),
          ...Object.fromEntries(
            running.nodes.map((node) => [dataNodeNames.get(node), readCpuSeconds(node.pid)]),
          ),
          sentinels: sentinels.some((value) => value === null)
            ? null
            : sentinels.reduce<number>((sum, value) => sum + (value ?? 0), 0),
          loadGenerator: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
        };
      },
      async stop() {
        await brokers.stop();
        await stopSet();
      },
    };
  } catch (error) {
    await pair?.stop();
    await stopSet();
    throw error;
  }
}
