/** A Redis Cluster of primaries with replicas, built with `redis-cli --cluster create`. See ./redis-topology. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  allocatePort,
  dataNodeArgs,
  GiveUp,
  hashSlot,
  info,
  isLive,
  range,
  startNode,
  TOPOLOGY_TIMEOUT_MS,
  waitUntil,
  type RedisNode,
} from './redis-topology';

export interface RedisCluster {
  /** All nodes. */
  nodes: RedisNode[];
  /** redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3 (the initial primaries) */
  url: string;
  /** The node currently serving the hash slot of `key` as primary (CLUSTER NODES from the live nodes). */
  primaryFor(key: string): Promise<RedisNode>;
  /** The replica(s) of that primary. */
  replicasOf(primary: RedisNode): Promise<RedisNode[]>;
  /** CLUSTER FAILOVER on a replica of the slot's primary; waits until every live node names it primary for the slot and cluster_state is ok (30 s). */
  failover(key: string): Promise<RedisNode>;
  /** After primaryFor(key).kill(): waits until a different node serves the slot as primary with cluster_state:ok on it (30 s). */
  waitForPromotion(key: string, old: RedisNode): Promise<RedisNode>;
  stop(): Promise<void>;
}

/** One line of CLUSTER NODES. */
interface ClusterEntry {
  id: string;
  port: number;
  flags: string[];
  masterId: string;
  configEpoch: number;
  slots: [number, number][];
}

function parseClusterNodes(text: string): ClusterEntry[] {
  return text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => {
      // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>
      const [id = '', address = '', flags = '', masterId = '', , , epoch = '0', , ...ranges] = line
        .trim()
        .split(' ');
      const hostPort = address.split('@')[0] ?? '';
      return {
        id,
        port: Number(hostPort.slice(hostPort.lastIndexOf(':') + 1)),
        flags: flags.split(','),
        masterId,
        configEpoch: Number(epoch),
        // "[slot->-id]" / "[slot-<-id]" mark slots in migration: not owned, skipped.
        slots: ranges
          .filter((range) => !range.startsWith('['))
          .map((range) => range.split('-').map(Number) as [number] | [number, number])
          .map(([from, to = from]) => [from, to] as [number, number]),
      };
    });
}

const servesSlot = (entry: ClusterEntry, slot: number) =>
  entry.flags.includes('master') && entry.slots.some(([from, to]) => from <= slot && slot <= to);

/** Of the entries claiming `slot`, the one with the highest config epoch: the claim Redis Cluster honours. */
const ownerIn = (entries: ClusterEntry[], slot: number) =>
  entries
    .filter((entry) => servesSlot(entry, slot))
    .reduce<ClusterEntry | undefined>(
      (best, entry) => (best && best.configEpoch >= entry.configEpoch ? best : entry),
      undefined,
    );

export async function startRedisCluster(
  options: { primaries?: number; replicasPerPrimary?: number; nodeTimeoutMs?: number } = {},
): Promise<RedisCluster> {
  const { primaries = 3, replicasPerPrimary = 1, nodeTimeoutMs = 1000 } = options;
  const nodes: RedisNode[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
  };
  const byPort = (port: number) => {
    const node = nodes.find((candidate) => candidate.port === port);
    if (!node) throw new Error(`port ${port} is not a node of this cluster`);
    return node;
  };
  /** CLUSTER NODES as each live node sees it; nodes that do not answer are left out. */
  const views = async () => {
    const answers = await Promise.all(
      nodes
        .filter(isLive)
        .map((node) => node.cli('CLUSTER', 'NODES').then(parseClusterNodes, () => undefined)),
    );
    return answers.filter((view): view is ClusterEntry[] => view !== undefined);
  };
  const stateOk = async (node: RedisNode) => (await node.cli('CLUSTER', 'INFO')).includes('cluster_state:ok');

  try {
    // The bus port is set, not left at port + 10000: that is past 65535 for a third of the ephemeral range.
    const clusterArgs = async (port: number, dir: string) => [
      ...dataNodeArgs(port, dir),
      ...['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
      ...['--cluster-node-timeout', String(nodeTimeoutMs), '--cluster-port', String(await allocatePort())],
      ...['--cluster-allow-replica-migration', 'no', '--cluster-require-full-coverage', 'yes'],
    ];
    const count = primaries * (1 + replicasPerPrimary);
    nodes.push(...(await Promise.all(range(count).map(() => startNode('cluster-node', clusterArgs)))));
    const addresses = nodes.map((node) => node.address);
    const create = ['--cluster', 'create', ...addresses, '--cluster-replicas', String(replicasPerPrimary)];
    await promisify(execFile)('redis-cli', [...create, '--cluster-yes'], { timeout: 60_000 });
    // Settled: every node has state ok, every replica is in sync, and all views of who is what agree.
    await waitUntil('the cluster to settle', TOPOLOGY_TIMEOUT_MS, async () => {
      const seen = await Promise.all(
        nodes.map(async (node) => parseClusterNodes(await node.cli('CLUSTER', 'NODES'))),
      );
      const summaries = seen.map((view) =>
        view
          .map((entry) => {
            const master = view.find((other) => other.id === entry.masterId)?.port ?? '-';
            const healthy = !entry.flags.some((flag) => /fail|handshake|noaddr/.test(flag));
            return `${entry.port} ${healthy} ${master} ${JSON.stringify(entry.slots)}`;
          })
          .sort()
          .join('\n'),
      );
      if (seen.some((view) => view.length !== count) || summaries.some((summary) => summary !== summaries[0]))
        return undefined;
      if (summaries[0]?.includes(' false ')) return undefined;
      for (const node of nodes) {
        if (!(await stateOk(node))) return undefined;
        const replication = await info(node, 'replication');
        if (replication.role === 'slave' && replication.master_link_status !== 'up') return undefined;
      }
      return true;
    });
  } catch (error) {
    await stop();
    throw error;
  }

  const initialPrimaries = parseClusterNodes(await (nodes[0] as RedisNode).cli('CLUSTER', 'NODES'))
    .filter((entry) => entry.flags.includes('master'))
    .map((entry) => byPort(entry.port))
    .sort((a, b) => nodes.indexOf(a) - nodes.indexOf(b));

  const cluster: RedisCluster = {
    nodes,
    url: `redis+cluster://${initialPrimaries.map((node) => node.address).join(',')}`,
    async primaryFor(key) {
      const owner = ownerIn((await views()).flat(), hashSlot(key));
      if (!owner) throw new Error(`no live node knows who serves the slot of ${key}`);
      return byPort(owner.port);
    },
    async replicasOf(primary) {
      // The primary knows its replicas best (they connect to it); if it is down, any live node's view.
      const view = isLive(primary)
        ? parseClusterNodes(await primary.cli('CLUSTER', 'NODES'))
        : ((await views())[0] ?? []);
      const id = view.find((entry) => entry.port === primary.port)?.id;
      return view
        .filter((entry) => entry.masterId === id && entry.flags.includes('slave'))
        .map((e) => byPort(e.port));
    },
    async failover(key) {
      const deadline = Date.now() + TOPOLOGY_TIMEOUT_MS;
      const slot = hashSlot(key);
      const old = await cluster.primaryFor(key);
      const replica = (await cluster.replicasOf(old)).find(isLive);
      if (!replica) throw new Error(`${old.address} has no live replica to fail over to`);
      await replica.cli('CLUSTER', 'FAILOVER');
      return waitUntil(`${replica.address} to take over slot ${slot}`, deadline - Date.now(), async () => {
        const seen = await views();
        if (!seen.every((view) => ownerIn(view, slot)?.port === replica.port)) return undefined;
        for (const node of nodes.filter(isLive)) if (!(await stateOk(node))) return undefined;
        return replica;
      });
    },
    waitForPromotion: (key, old) =>
      waitUntil(`a primary other than ${old.address} for ${key}`, TOPOLOGY_TIMEOUT_MS, async () => {
        const next = await cluster.primaryFor(key);
        if (next === old) return undefined;
        if (!isLive(next)) throw new GiveUp(`${next.address} serves the slot but is not running`);
        return (await info(next, 'replication')).role === 'master' && (await stateOk(next))
          ? next
          : undefined;
      }),
    stop,
  };
  return cluster;
}
