import { createAuditLog } from '../../src/audit/audit-log';
import { AuditTamperError, startAuditSealer, type FailoverLoss } from '../../src/audit/audit-sealer';
import { parseRedisTarget } from '../../src/config/redis-target';
import { closeRedis, connectRedis, waitForReady, type RedisClient } from '../../src/redis/connection';
import { createDurableWrites } from '../../src/redis/durable-writes';
import { RedisKeys } from '../../src/redis/keys';
import { generateSigningJwks, loadSigningKeys } from '../../src/signing/signing-keys';
import { startLocalRedis, type LocalRedis } from '../../src/wiring/local-redis';
import { tempDir } from '../support/fixtures';

/**
 * A failover takes the newest seals the promoted replica never got; someone with write access to Redis
 * can also cut the log back. The sealer tells them apart by the primary: only when the primary changed
 * since its newest seal, and the new primary's log carries on from a seal it saw, does it go on sealing.
 */
describe('the audit sealer across a primary change', () => {
  let server: LocalRedis;
  let redis: RedisClient;
  beforeAll(async () => {
    server = await startLocalRedis(tempDir('sealer-failover'));
    redis = connectRedis(parseRedisTarget(server.url));
    await waitForReady(redis, 5000);
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  async function sealerOn(prefix: string) {
    const keys = new RedisKeys(prefix);
    const durable = createDurableWrites(redis, {
      routingKey: keys.due(),
      replicaAcks: 0,
      replicaAckTimeoutMs: 100,
      replaySeconds: 0,
      replayMaxWrites: 0,
      nowMs: Date.now,
      onNotReplicated: () => undefined,
    });
    const audit = createAuditLog(redis, keys, durable);
    const signingKeys = await loadSigningKeys(JSON.stringify(await generateSigningJwks()));
    const primary = { id: 'replid-a' };
    const losses: FailoverLoss[] = [];
    const errors: unknown[] = [];
    const sealer = startAuditSealer({
      redis,
      keys,
      audit,
      signingKeys,
      brokerIssuer: 'https://broker.test',
      intervalMs: 60_000,
      nowMs: Date.now,
      primary: { last: () => primary.id, current: async () => primary.id },
      onFailoverLoss: (loss) => losses.push(loss),
      onError: (error) => errors.push(error),
    });
    const appendAndSeal = async (count: number) => {
      for (let i = 0; i < count; i++)
        await audit.append({ type: 'task.declared', atMs: Date.now(), task: `t-${prefix}-${i}` });
      return sealer.sealNow();
    };
    return { keys, audit, sealer, primary, losses, errors, appendAndSeal };
  }

  /** Takes the newest `count` seals away, as a failover to a replica that never got them would. */
  async function dropNewestSeals(keys: RedisKeys, count: number) {
    const newest = await redis.xrevrange(keys.auditSeals(), '+', '-', 'COUNT', count);
    await redis.xdel(keys.auditSeals(), ...newest.map(([id]) => id));
  }

  it('reports seals a new primary lacks as a failover loss and seals on from the newest it holds', async () => {
    const { keys, audit, sealer, primary, losses, appendAndSeal } = await sealerOn('sf1:');
    for (let round = 0; round < 4; round++) expect(await appendAndSeal(3)).toBe(3);
    const seals = await audit.seals(undefined, 100);
    expect(seals).toHaveLength(4);
    await dropNewestSeals(keys, 2);
    primary.id = 'replid-b';

    expect(await appendAndSeal(2)).toBe(8);
    expect(losses).toEqual([
      {
        kept: { seq: 6, id: seals[1]?.id },
        lost: { seq: 12, id: seals[3]?.id },
      },
    ]);
    // The chain goes on from there: a later round seals with no further report.
    expect(await appendAndSeal(1)).toBe(1);
    expect(losses).toHaveLength(1);
    await sealer.stop();
  });

  it('halts when the log is cut back on the same primary', async () => {
    const { keys, sealer, losses, errors, appendAndSeal } = await sealerOn('sf2:');
    for (let round = 0; round < 3; round++) await appendAndSeal(2);
    await dropNewestSeals(keys, 1);
    await expect(appendAndSeal(1)).rejects.toBeInstanceOf(AuditTamperError);
    // And stays halted: nothing more is sealed until a restart after `audit verify`.
    expect(await appendAndSeal(1)).toBe(0);
    expect(losses).toEqual([]);
    expect(errors).toEqual([]);
    await sealer.stop();
  });

  it('halts after a primary change that left no seal at all', async () => {
    const { keys, sealer, primary, losses, appendAndSeal } = await sealerOn('sf3:');
    for (let round = 0; round < 3; round++) await appendAndSeal(2);
    await redis.del(keys.auditSeals());
    primary.id = 'replid-c';
    await expect(appendAndSeal(1)).rejects.toThrow('the audit seals are gone from Redis');
    expect(losses).toEqual([]);
    await sealer.stop();
  });
});
