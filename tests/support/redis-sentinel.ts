/** A Sentinel set: one primary, its replicas, and the sentinels that monitor them. See ./redis-topology. */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  dataNodeArgs,
  GiveUp,
  HOST,
  info,
  isLive,
  range,
  startNode,
  TOPOLOGY_TIMEOUT_MS,
  waitUntil,
  type RedisNode,
} from './redis-topology';

export interface SentinelSet {
  masterName: string;
  /** Data nodes: nodes[0] starts as primary, the rest as replicas. */
  nodes: RedisNode[];
  sentinels: RedisNode[];
  /** redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/<masterName> */
  url: string;
  /** The data node that the sentinels currently name as primary (SENTINEL get-master-addr-by-name on a live sentinel). */
  primary(): Promise<RedisNode>;
  /** SENTINEL FAILOVER, then waits until every live sentinel names the new primary, it reports role:master and every other live data node replicates it with master_link_status:up (30 s). */
  failover(): Promise<RedisNode>;
  /** Resolves once the sentinels name a primary other than `old` and it reports role:master (30 s); for use after old.kill(). */
  waitForPromotion(old: RedisNode): Promise<RedisNode>;
  stop(): Promise<void>;
}

export async function startSentinelSet(
  options: {
    replicas?: number;
    sentinels?: number;
    downAfterMs?: number;
    failoverTimeoutMs?: number;
    masterName?: string;
  } = {},
): Promise<SentinelSet> {
  const {
    replicas = 2,
    sentinels: sentinelCount = 3,
    downAfterMs = 1000,
    failoverTimeoutMs = 3000,
  } = options;
  const masterName = options.masterName ?? 'tlmaster';
  const nodes: RedisNode[] = [];
  const sentinels: RedisNode[] = [];
  // Every data node announces 127.0.0.1, so whichever is promoted, the sentinels hand out a loopback address.
  const args = (port: number, dir: string) => [...dataNodeArgs(port, dir), '--replica-announce-ip', HOST];
  const stop = async () => {
    await Promise.all(sentinels.map((sentinel) => sentinel.stop()));
    await Promise.all(nodes.map((node) => node.stop()));
  };

  const named = async (sentinel: RedisNode): Promise<RedisNode> => {
    const [host, port] = (await sentinel.cli('SENTINEL', 'get-master-addr-by-name', masterName)).split('\n');
    const node = nodes.find((candidate) => candidate.port === Number(port));
    if (host !== HOST || !node)
      throw new Error(`${sentinel.address} names ${host}:${port}, not a node of this set`);
    return node;
  };
  /** The primary every live sentinel names, if they agree on one that is not `old` and it says role:master. */
  const agreedPrimary = async (old: RedisNode | undefined, replicasInSync: boolean) => {
    const [first, ...others] = await Promise.all(sentinels.filter(isLive).map(named));
    if (!first || first === old || others.some((node) => node !== first)) return undefined;
    if ((await info(first, 'replication')).role !== 'master') return undefined;
    for (const node of replicasInSync ? nodes.filter((n) => n !== first && isLive(n)) : []) {
      const replication = await info(node, 'replication');
      if (replication.master_port !== String(first.port) || replication.master_link_status !== 'up')
        return undefined;
    }
    return first;
  };

  try {
    const first = await startNode('sentinel-data', args);
    nodes.push(first);
    const replicaOf = ['--replicaof', HOST, String(first.port)];
    nodes.push(
      ...(await Promise.all(
        range(replicas).map(() =>
          startNode('sentinel-data', (port, dir) => [...args(port, dir), ...replicaOf]),
        ),
      )),
    );
    await waitUntil('the replicas to sync', TOPOLOGY_TIMEOUT_MS, async () => {
      if ((await info(first, 'replication')).connected_slaves !== String(replicas)) return undefined;
      const links = await Promise.all(
        nodes.slice(1).map(async (node) => (await info(node, 'replication')).master_link_status),
      );
      return links.every((status) => status === 'up') || undefined;
    });

    const quorum = sentinelCount === 1 ? 1 : 2;
    const sentinelArgs = (port: number, dir: string) => {
      const conf = path.join(dir, 'sentinel.conf');
      const lines = [
        `port ${port}`,
        `bind ${HOST}`,
        'protected-mode no',
        `dir ${dir}`,
        `logfile ${path.join(dir, 'redis.log')}`,
        'loglevel warning',
        `sentinel monitor ${masterName} ${HOST} ${first.port} ${quorum}`,
        `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
        `sentinel failover-timeout ${masterName} ${failoverTimeoutMs}`,
        `sentinel parallel-syncs ${masterName} 1`,
      ];
      writeFileSync(conf, lines.join('\n') + '\n'); // Sentinel rewrites this file as it learns the topology
      return [conf, '--sentinel'];
    };
    sentinels.push(
      ...(await Promise.all(range(sentinelCount).map(() => startNode('sentinel', sentinelArgs)))),
    );
    // Ready when each sentinel has connected to every replica (flags exactly "slave") and heard every other sentinel.
    await waitUntil('the sentinels to see every replica and each other', TOPOLOGY_TIMEOUT_MS, async () => {
      for (const sentinel of sentinels) {
        const seen = JSON.parse(await sentinel.cli('--json', 'SENTINEL', 'replicas', masterName));
        const peers = JSON.parse(await sentinel.cli('--json', 'SENTINEL', 'sentinels', masterName));
        const connected = (seen as { flags: string }[]).filter((replica) => replica.flags === 'slave');
        if (connected.length !== replicas || (peers as unknown[]).length !== sentinelCount - 1)
          return undefined;
      }
      return true;
    });
  } catch (error) {
    await stop();
    throw error;
  }

  const set: SentinelSet = {
    masterName,
    nodes,
    sentinels,
    url: `redis+sentinel://${sentinels.map((sentinel) => sentinel.address).join(',')}/${masterName}`,
    async primary() {
      let lastError: unknown = new Error('no sentinel is running');
      for (const sentinel of sentinels.filter(isLive)) {
        try {
          return await named(sentinel);
        } catch (error) {
          lastError = error;
        }
      }
      throw lastError;
    },
    async failover() {
      const deadline = Date.now() + TOPOLOGY_TIMEOUT_MS;
      const old = await set.primary();
      // NOGOODSLAVE: the sentinel has not had a fresh INFO from a replica yet (just started, just failed over).
      await waitUntil('SENTINEL FAILOVER to be accepted', TOPOLOGY_TIMEOUT_MS, async () => {
        const sentinel = sentinels.find(isLive);
        if (!sentinel) throw new GiveUp('no sentinel is running');
        try {
          return await sentinel.cli('SENTINEL', 'FAILOVER', masterName);
        } catch (error) {
          if (/NOGOODSLAVE/.test(String(error))) return undefined;
          throw new GiveUp(String(error));
        }
      });
      return waitUntil(`a failover away from ${old.address}`, deadline - Date.now(), () =>
        agreedPrimary(old, true),
      );
    },
    waitForPromotion: (old) =>
      waitUntil(`a primary other than ${old.address}`, TOPOLOGY_TIMEOUT_MS, () => agreedPrimary(old, false)),
    stop,
  };
  return set;
}
