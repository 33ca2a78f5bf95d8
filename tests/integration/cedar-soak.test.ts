import { startTestBroker, testRedisUrl, waitFor, type TestBroker } from '../support/broker';
import { freePort, spawnTasklease, waitForHttp, type TaskleaseProcess } from '../support/processes';

/**
 * The V8 guard: Cedar's WASM build crashed V8 ("unreachable code" in the deoptimizer) under load on
 * Node 20 and 22. A few thousand credential requests through the real `tasklease serve` process, each one
 * a Cedar evaluation, must all succeed and leave the process alive.
 */
const REQUESTS = 4_000;
const CONCURRENCY = 32;

describe('soak: thousands of credential requests through HTTP with Cedar', () => {
  let broker: TestBroker;
  let server: TaskleaseProcess;
  let url: string;

  beforeAll(async () => {
    // Every denial is a Cedar evaluation too: audited one by one here, not cut short by the refusal budget.
    broker = await startTestBroker({ worker: false, broker: { refusalsPerMinutePerIdentity: 10_000 } });
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    server = spawnTasklease(['serve'], {
      TASKLEASE_CONFIG: broker.configFile,
      REDIS_URL: testRedisUrl(),
      TASKLEASE_SIGNING_KEYS: broker.signingKeysJson,
      PORT: String(port),
      LOG_LEVEL: 'info',
    });
    await waitForHttp(`${url}/readyz`, server);
  });
  afterAll(async () => {
    await server.stop();
    await broker.close();
  });

  it(`serves ${REQUESTS} issuances, a mix of allowed and denied, through a SIGHUP reload, without a crash`, async () => {
    const tokens = await Promise.all(
      ['a', 'b', 'c', 'd'].map((name) => broker.agents.sign({ sub: `soak-${name}` }, { ttlSeconds: 3600 })),
    );
    const tasks: { token: string; taskId: string }[] = [];
    for (const token of tokens) {
      const response = await fetch(`${url}/v1/tasks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          purpose: 'soak',
          ticket: 'OPS-9',
          ref: 'refs/heads/feature',
          ttlSeconds: 3600,
        }),
      });
      tasks.push({ token, taskId: ((await response.json()) as { taskId: string }).taskId });
    }
    const counts: Record<number, number> = {};
    let next = 0;
    const runOne = async () => {
      while (next < REQUESTS) {
        const i = next++;
        // Halfway, reload the policies with SIGHUP, as an operator would: no request may be dropped.
        if (i === REQUESTS / 2) process.kill(server.child.pid as number, 'SIGHUP');
        const { token, taskId } = tasks[i % tasks.length] as { token: string; taskId: string };
        // One in five asks for a grant the policy denies on this ref: both paths through Cedar.
        const grant = i % 5 === 0 ? 'artifacts-write' : 'artifacts-read';
        const response = await fetch(`${url}/v1/tasks/${taskId}/credentials`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ grant, ttlSeconds: 300 }),
        });
        await response.arrayBuffer();
        counts[response.status] = (counts[response.status] ?? 0) + 1;
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, runOne));
    expect(counts).toEqual({ 201: REQUESTS * 0.8, 403: REQUESTS * 0.2 });
    expect(server.child.exitCode).toBeNull();
    expect(server.output()).not.toMatch(/unreachable|Fatal|FATAL/);
    await waitFor(async () => /policies reloaded/.test(server.output()), 2_000);
    expect(await broker.context.deps.leases.countUnsettled()).toBe(REQUESTS * 0.8);
  }, 120_000);
});
