import Redis, { Cluster } from 'ioredis';
import { parseRedisTarget } from '../../src/config/redis-target';
import { closeRedis, connectRedis, waitForReady } from '../../src/redis/connection';
import { hashSlot, startRedisCluster, startSentinelSet, waitUntil } from '../support/redis-topology';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Retries SET + GET through `client` until one round trip works; fails after `withinMs`. */
async function writesWithin(
  client: Redis | Cluster,
  key: string,
  value: string,
  withinMs: number,
): Promise<void> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      await client.set(key, value);
      if ((await client.get(key)) === value) return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    if (Date.now() > deadline) throw new Error(`no write through the client within ${withinMs} ms`);
    await sleep(100);
  }
}

describe('Redis topology test support', () => {
  it('starts a Sentinel set that fails over and promotes, with ioredis following it', async () => {
    const set = await startSentinelSet({ replicas: 2, sentinels: 3 });
    // The broker's own connection (src/redis/connection.ts): it must follow both failovers.
    const client = connectRedis(parseRedisTarget(set.url));
    client.on('error', () => {}); // connection errors while the primary moves are expected; commands retry
    try {
      await waitForReady(client, 10_000);
      expect(set.url).toBe(`redis+sentinel://${set.sentinels.map((s) => s.address).join(',')}/tlmaster`);
      expect(await set.primary()).toBe(set.nodes[0]);
      await client.set('tl:probe', 'before');
      expect(await set.nodes[0]?.cli('GET', 'tl:probe')).toBe('before');

      const promoted = await set.failover();
      expect(promoted).not.toBe(set.nodes[0]);
      expect(await set.primary()).toBe(promoted);
      await writesWithin(client, 'tl:probe', 'after-failover', 10_000);
      expect(await promoted.cli('GET', 'tl:probe')).toBe('after-failover');

      await promoted.kill();
      expect(promoted.pid).toBeUndefined();
      const next = await set.waitForPromotion(promoted);
      expect(next).not.toBe(promoted);
      expect(await set.primary()).toBe(next);
      await writesWithin(client, 'tl:probe', 'after-promotion', 15_000);
      expect(await next.cli('GET', 'tl:probe')).toBe('after-promotion');
    } finally {
      await closeRedis(client);
      await set.stop();
      await set.stop(); // idempotent
    }
  }, 120_000);

  it('starts a Redis Cluster whose slot fails over and gets promoted, with ioredis following it', async () => {
    const cluster = await startRedisCluster({ primaries: 3, replicasPerPrimary: 1 });
    const seeds = cluster.url.replace('redis+cluster://', '').split(',');
    const client = new Cluster(
      seeds.map((seed) => ({ host: '127.0.0.1', port: Number(seed.split(':')[1]) })),
    );
    client.on('error', () => {});
    const key = '{tl}:x';
    try {
      expect(cluster.nodes).toHaveLength(6);
      expect(seeds).toHaveLength(3);
      expect(hashSlot('{tl}:lease:abc')).toBe(hashSlot('{tl}:due'));
      expect(hashSlot('123456789')).toBe(0x31c3 % 16384); // the CRC16/XMODEM check value
      const keys = ['{tl}:lease:abc', '{tl}:due', 'foo', '', '{}', '{a', 'a}', 'a{}{b}', '{}{tl}', 'a{b}{c}'];
      keys.push('{{tl}}', '}{tl}', 'x{tl', '{tl}}', 'user:{1000}:following', 'clé{ü}', '{🔑}:x');
      for (const slotKey of keys) {
        const keyslot = Number(await cluster.nodes[0]?.cli('CLUSTER', 'KEYSLOT', slotKey));
        expect([slotKey, hashSlot(slotKey)]).toEqual([slotKey, keyslot]);
      }

      await client.set(key, 'before');
      const old = await cluster.primaryFor(key);
      const [replica, ...more] = await cluster.replicasOf(old);
      expect(more).toEqual([]);

      const promoted = await cluster.failover(key);
      expect(promoted).toBe(replica);
      expect(await cluster.primaryFor(key)).toBe(promoted);
      // The demoted primary shows as the new one's replica once the cluster's gossip has caught up.
      const demoted = await waitUntil('the old primary to replicate the new one', 10_000, async () => {
        const replicas = await cluster.replicasOf(promoted);
        return replicas.length > 0 ? replicas : undefined;
      });
      expect(demoted).toEqual([old]);
      await writesWithin(client, key, 'after-failover', 10_000);

      await promoted.kill();
      const next = await cluster.waitForPromotion(key, promoted);
      expect(next).toBe(old); // replica migration is off: the old primary is the slot's only replica
      await writesWithin(client, key, 'after-promotion', 15_000);

      // Its nodes.conf brings a killed node back into the cluster, as a replica of the slot's new primary.
      await promoted.restart();
      expect(promoted.pid).toBeDefined();
      expect(await promoted.cli('PING')).toBe('PONG');
    } finally {
      client.disconnect();
      await cluster.stop();
    }
  }, 120_000);
});
