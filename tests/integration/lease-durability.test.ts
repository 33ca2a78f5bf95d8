import { BrokerError } from '../../src/domain/errors';
import type { Lease, ProviderKind } from '../../src/domain/types';
import type { CredentialProvider } from '../../src/providers/provider';
import type { AttestationVerifier } from '../../src/identity/verify-attestation';
import { issueCredential } from '../../src/usecases/issue-credential';
import { startLocalRedis, type LocalRedis } from '../../src/wiring/local-redis';
import { startTestBroker, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';

describe('a lease is durable before its credential leaves', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker();
  });
  afterAll(() => broker.close());

  it('revokes the credential at once and returns none when the lease cannot be written', async () => {
    const { deps } = broker.context;
    const agent = await broker.agents.sign({ sub: 'durability' });
    const identity = await (broker.context.verifier as AttestationVerifier).verify(agent);
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'durability', ticket: 'OPS-3' });

    const jwt = deps.providers.get('jwt') as CredentialProvider;
    const revoked: Lease[] = [];
    const spyingJwt: CredentialProvider = {
      ...jwt,
      revoke: async (lease, ctx) => (revoked.push(lease), jwt.revoke(lease, ctx)),
    };
    const failingDeps = {
      ...deps,
      providers: new Map<ProviderKind, CredentialProvider>([['jwt', spyingJwt]]),
      leases: { ...deps.leases, create: async () => Promise.reject(new Error('Connection is closed.')) },
    };

    const attempt = issueCredential(failingDeps, identity, task.body.taskId, { grant: 'artifacts-read' });
    await expect(attempt).rejects.toMatchObject({ code: 'unavailable' });
    await expect(attempt).rejects.toBeInstanceOf(BrokerError);
    expect(revoked).toHaveLength(1);
    // The minted token's id is on the revocation list: even if it had leaked, introspection says inactive.
    // A broker JWT's id is its lease id.
    const jti = revoked[0]?.id as string;
    expect(await broker.context.redis.exists(broker.context.keys.revokedJti(jti))).toBe(1);
    // And nothing half-written: no lease record, no index entry.
    expect(await deps.leases.get(jti)).toBeNull();
    expect(await deps.tasks.leaseIds(task.body.taskId)).toEqual([]);
  });

  it('answers 429 lease_limit_reached at the cap, and records nothing', async () => {
    const capped = await startTestBroker({ broker: { maxActiveLeases: 2 } });
    try {
      const agent = await capped.agents.sign({ sub: 'capped' });
      const task = await capped.call('POST', '/v1/tasks', agent, { purpose: 'cap', ticket: 'OPS-4' });
      const route = `/v1/tasks/${task.body.taskId}/credentials`;
      expect((await capped.call('POST', route, agent, { grant: 'artifacts-read' })).status).toBe(201);
      expect((await capped.call('POST', route, agent, { grant: 'artifacts-read' })).status).toBe(201);
      const third = await capped.call('POST', route, agent, { grant: 'artifacts-read' });
      expect(third.status).toBe(429);
      expect(third.body.error).toBe('lease_limit_reached');
      expect(await capped.context.deps.tasks.leaseIds(task.body.taskId)).toHaveLength(2);
    } finally {
      await capped.close();
    }
  });
});

describe('Redis goes away', () => {
  let redis: LocalRedis;
  let broker: TestBroker;
  beforeAll(async () => {
    redis = await startLocalRedis(tempDir('redis-down'), { appendOnly: false });
    broker = await startTestBroker({ redisUrl: redis.url, worker: false });
  });
  afterAll(async () => {
    await broker.close().catch(() => undefined);
    await redis.stop();
  });

  it('answers 503 unavailable and not ready, and keeps serving once it has an answer', async () => {
    const agent = await broker.agents.sign({ sub: 'outage' });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'outage', ticket: 'OPS-5' });
    expect(task.status).toBe(201);
    await redis.stop();
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
    });
    expect(issued.status).toBe(503);
    expect(issued.body.error).toBe('unavailable');
    expect(JSON.stringify(issued.body)).not.toMatch(/eyJ/);
    expect((await broker.call('GET', '/readyz', null)).status).toBe(503);
    expect((await broker.call('GET', '/healthz', null)).status).toBe(200);
  });
});
