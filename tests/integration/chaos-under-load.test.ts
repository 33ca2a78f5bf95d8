import { createHash } from 'node:crypto';
import { startTestBroker, testRedisUrl, waitFor, type TestBroker } from '../support/broker';
import { startServeProcess, type TaskleaseProcess } from '../support/processes';
import { dataNodeArgs, startNode, type RedisNode } from '../support/redis-topology';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("issue")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");
`;
const IN_FLIGHT = 16;
const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

interface Issued {
  leaseId: string;
  token: string;
}

/**
 * Keeps IN_FLIGHT credential calls going against `url` until `stop()`; every 201 is kept (lease id and the
 * JWT): what a caller holds. Connection errors and 5xx are counted, not kept: nobody got a credential.
 */
function loadGenerator(url: () => string, token: string, taskId: string) {
  const issued: Issued[] = [];
  const statuses = new Map<number | string, number>();
  let running = true;
  const count = (key: number | string) => statuses.set(key, (statuses.get(key) ?? 0) + 1);
  const lane = async () => {
    while (running) {
      try {
        const response = await fetch(`${url()}/v1/tasks/${taskId}/credentials`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ grant: 'artifacts-read', ttlSeconds: 600 }),
          signal: AbortSignal.timeout(20_000),
        });
        count(response.status);
        const body = (await response.json()) as { leaseId?: string; credential?: { token?: string } };
        if (response.status === 201 && body.leaseId && body.credential?.token)
          issued.push({ leaseId: body.leaseId, token: body.credential.token });
      } catch {
        count('connection');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  };
  const lanes = Array.from({ length: IN_FLIGHT }, lane);
  return {
    issued,
    statuses,
    async stop() {
      running = false;
      await Promise.all(lanes);
    },
  };
}

/** Every credential a caller got has its lease, active, for that very credential. */
async function assertEveryCredentialHasItsLease(broker: TestBroker, issued: readonly Issued[]) {
  const missing: string[] = [];
  for (const { leaseId, token } of issued) {
    const lease = await broker.context.deps.leases.get(leaseId);
    if (!lease || lease.credentialSha256 !== sha256Hex(token) || lease.state !== 'active')
      missing.push(leaseId);
  }
  expect({ issued: issued.length, withoutLease: missing }).toEqual({
    issued: issued.length,
    withoutLease: [],
  });
}

describe('the API killed with SIGKILL under load', () => {
  let broker: TestBroker;
  const processes: TaskleaseProcess[] = [];
  beforeAll(async () => {
    broker = await startTestBroker({ policies: POLICIES });
  });
  afterAll(async () => {
    await Promise.all(processes.map((proc) => proc.stop()));
    await broker?.close();
  });

  const startServe = () => startServeProcess({ ...broker, redisUrl: testRedisUrl() }, processes);

  it('three kills mid-load: every credential returned has its lease', async () => {
    const agent = await broker.agents.sign({ sub: 'busy-agent' }, { ttlSeconds: 3600 });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'load', ticket: 'OPS-11' });
    expect(task.status).toBe(201);
    let serve = await startServe();
    const load = loadGenerator(() => serve.url, agent, task.body.taskId);
    for (let kill = 0; kill < 3; kill++) {
      const before = load.issued.length;
      await waitFor(async () => load.issued.length >= before + 150, 30_000, 5);
      serve.proc.child.kill('SIGKILL');
      serve = await startServe();
    }
    await waitFor(async () => load.issued.length >= 600, 30_000, 5);
    await load.stop();
    console.info(
      `API SIGKILL x3 under load: ${load.issued.length} credentials, answers ${JSON.stringify(Object.fromEntries(load.statuses))}`,
    );
    // Calls were cut by the kills (and none of them returned a credential).
    expect(load.statuses.get('connection') ?? 0).toBeGreaterThan(0);
    await assertEveryCredentialHasItsLease(broker, load.issued);
  }, 180_000);
});

describe('Redis restarted under load (AOF)', () => {
  let node: RedisNode;
  let broker: TestBroker;
  beforeAll(async () => {
    node = await startNode('restart-load', dataNodeArgs);
    broker = await startTestBroker({ policies: POLICIES, redisUrl: `redis://${node.address}` });
  });
  afterAll(async () => {
    await broker?.close();
    await node?.stop();
  });

  it('the API answers 503 while Redis is down, is ready again within 10 s of its return, and loses nothing', async () => {
    const agent = await broker.agents.sign({ sub: 'steady-agent' }, { ttlSeconds: 3600 });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'load', ticket: 'OPS-12' });
    expect(task.status).toBe(201);
    const load = loadGenerator(() => broker.url, agent, task.body.taskId);
    await waitFor(async () => load.issued.length >= 200, 30_000, 5);

    await node.stop(); // SIGTERM: Redis writes its AOF out and exits
    const down = load.statuses.get(503) ?? 0;
    await waitFor(async () => (load.statuses.get(503) ?? 0) > down, 10_000, 5);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await node.restart();
    const backAt = Date.now();
    await waitFor(
      async () => (await fetch(`${broker.url}/readyz`).catch(() => null))?.status === 200,
      10_000,
      20,
    );
    const readyAfterMs = Date.now() - backAt;
    expect(readyAfterMs).toBeLessThanOrEqual(10_000);
    const atReturn = load.issued.length;
    await waitFor(async () => load.issued.length >= atReturn + 200, 30_000, 5);
    await load.stop();

    console.info(
      `Redis restart under load: ready ${readyAfterMs} ms after Redis answered; ${load.issued.length} credentials, answers ${JSON.stringify(Object.fromEntries(load.statuses))}`,
    );
    // While Redis was down the API refused with 503 unavailable, never a 500.
    expect(load.statuses.get(500) ?? 0).toBe(0);
    expect(load.statuses.get(503) ?? 0).toBeGreaterThan(0);
    await assertEveryCredentialHasItsLease(broker, load.issued);
  }, 120_000);
});
